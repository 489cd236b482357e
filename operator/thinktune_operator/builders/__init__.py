"""Pure builders: CR dict (+ a little context) in, child object dicts out. No API calls; unit-tested."""
