"""`make bench`: the mirror side by side with distribution's proxy mode on real parts (issue 8).

Run as `python -m tests.bench [--runs N] [--quick] [--only 1,3,6]`. No module here is named `test_*`:
pytest never collects the bench.
"""
