"""A simulated runtime: a Colab VM's death on one Linux machine (docs/fault_injection.md).

:class:`Runtime` runs a command in its own mount, UTS and PID namespaces with a fresh,
empty ``/tmp`` and a host name of its own; :meth:`Runtime.kill` kills every process of it
at once and its ``/tmp`` with them, as a runtime's death does. :func:`refusal` says why this
machine cannot simulate one (it needs Linux, root and ``unshare``).
"""

from colabrun.runner.sim.runtime import Runtime, refusal

__all__ = ["Runtime", "refusal"]
