"""FlowLayer for Python: a local service runtime and its terminal client."""

__version__ = "0.1.0"
