"""Training, simulation and evaluation code for dmdet (needs the ``train`` extras; not shipped in the wheel)."""
