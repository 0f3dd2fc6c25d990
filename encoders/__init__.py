"""anymodal plugin package: encoders found through the `anymodal.encoders` entry points."""
