"""Code only tests and benchmarks use: the sample generator, synthetic detectors, harness benchmark. Nothing in the
product imports it.
"""
