"""The compute engine: PE arrays, activation unit, post pipeline, sequencer, cycle model."""
