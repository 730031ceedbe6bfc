"""What the tests of export/ send the session's tiny causal LM run (`causal_lm_run`)."""

from tests.trainers.run_testing import CAUSAL_LM_CONTEXT

MAX_LENGTH = CAUSAL_LM_CONTEXT
# Prompts of several lengths: empty, unknown characters, and one longer than the context,
# which both paths must cut from the left.
PROMPTS = ["def f(x):", "", "The é€ ", "import os\n" * 5]
