"""Types of the public API: ``__init__.py`` imports these names lazily, on first use."""

from edge_runtime.api import AnnotatedImage as AnnotatedImage
from edge_runtime.api import Model as Model
from edge_runtime.api import annotate as annotate
from edge_runtime.api import load_model as load_model
from edge_runtime.api import open_source as open_source
from edge_runtime.errors import BackendError as BackendError
from edge_runtime.errors import BundleError as BundleError
from edge_runtime.errors import ConfigError as ConfigError
from edge_runtime.errors import EdgeRuntimeError as EdgeRuntimeError
from edge_runtime.errors import MissingDependencyError as MissingDependencyError
from edge_runtime.errors import ModelError as ModelError
from edge_runtime.errors import OutputError as OutputError
from edge_runtime.errors import PreprocessError as PreprocessError
from edge_runtime.errors import SourceError as SourceError
from edge_runtime.errors import UnknownComponentError as UnknownComponentError
from edge_runtime.sources.base import Source as Source
from edge_runtime.types import Classification as Classification
from edge_runtime.types import Frame as Frame
from edge_runtime.types import Prediction as Prediction

__version__: str
__all__: list[str]
