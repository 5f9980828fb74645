"""Flow data layer: tables in real units, the codec to tensors, the datamodule."""

from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.table import FlowTable

__all__ = ["FlowBatch", "FlowCodec", "FlowTable"]
