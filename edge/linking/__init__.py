"""The linker: global identities across cameras and modalities from the edge nodes' sightings.

Modules: :mod:`~edge.linking.gallery` (faiss prototypes, TTL, bounds, engine check),
:mod:`~edge.linking.assignment` (decision rules), :mod:`~edge.linking.linker` (the state machine),
:mod:`~edge.linking.events` and :mod:`~edge.linking.persistence` (journal + snapshots, recovery),
:mod:`~edge.linking.publishing` (PUB by camera, JSON lines), :mod:`~edge.linking.service` (the
ZeroMQ loop), :mod:`~edge.linking.ordering` (capture-time order across producers),
:mod:`~edge.linking.calibration` (the engine's thresholds), :mod:`~edge.linking.topology` (sites,
overlap groups, transit), :mod:`~edge.linking.clustering` (hygiene and the final pass),
:mod:`~edge.linking.config` (the schema). Rules and numbers: ``docs/linker.md``.

Importing this package loads neither faiss nor zmq: they are imported where a gallery is built or a
socket opened.
"""

from edge.linking.config import LinkerConfig, PersistenceConfig, ServiceConfig
from edge.linking.service import LinkerService, run_linker

__all__ = ["LinkerConfig", "PersistenceConfig", "ServiceConfig", "LinkerService", "run_linker"]
