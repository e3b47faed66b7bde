"""Cold start: load one Powertools module without the package `__init__` files above it.

Several Powertools packages import everything they hold in their `__init__`:
`event_handler` loads every resolver (AppSync, Bedrock, VPC Lattice, asyncio with them) and
`utilities.data_classes` loads the event classes of some thirty AWS services, where a handler
needs one resolver or one event class. Importing `aws_lambda_powertools.utilities.data_classes`
alone costs about 13 ms of CPU time beyond `import boto3` and the Powertools logger.

`import_alone` imports a module while each named package stands in unexecuted: a bare module
with the package's path, carrying only the names the module asks of it, each taken from the
submodule that defines it. The stand-ins are taken out again afterwards, so a later ordinary
import of such a package runs its real `__init__`, which finds the submodules already loaded:
the classes are the same objects either way.

The names asked of a package are those of the pinned Powertools version; a version that asks
for another one fails the import at once (every handler's tests import it), never later.
"""

import importlib
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from types import ModuleType

EVENT_HANDLER = "aws_lambda_powertools.event_handler"
DATA_CLASSES = "aws_lambda_powertools.utilities.data_classes"


@contextmanager
def _standing_in(package: str, exports: Mapping[str, str]) -> Iterator[None]:
    """`package` in sys.modules as a bare module that holds only `exports` (name -> submodule)."""
    if package in sys.modules:
        yield
        return
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModuleNotFoundError(package, name=package)
    sys.modules[package] = stand_in = importlib.util.module_from_spec(spec)
    try:
        for name, submodule in exports.items():
            module = importlib.import_module(f"{package}.{submodule}")
            setattr(stand_in, name, getattr(module, name))
        yield
    finally:
        del sys.modules[package]


def import_alone(module: str, packages: Mapping[str, Mapping[str, str]]) -> ModuleType:
    """`module`, imported while each package in `packages` stands in without its `__init__`.

    `packages` maps a package to the names `module` imports from it, each with the submodule
    that defines it; a package already imported is used as it is.
    """
    with ExitStack() as stack:
        for package, exports in packages.items():
            stack.enter_context(_standing_in(package, exports))
        return importlib.import_module(module)
