"""Hypothesis profiles: `ci` (the default: few examples, no deadline, so the README's test command stays
fast and load on the machine cannot fail a test) and `nightly` (HYPOTHESIS_PROFILE=nightly: 20x the examples)."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("nightly", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
