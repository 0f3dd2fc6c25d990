"""anymodal plugin package: decoders and retrievers found through the `anymodal.decoders` entry points."""
