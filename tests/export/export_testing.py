"""What the tests of export/ send the session's tiny causal LM run (`causal_lm_run`), and how
they send it over HTTP."""

import json
import urllib.error
import urllib.request

import tensorflow as tf

from tests.trainers.run_testing import CAUSAL_LM_CONTEXT

MAX_LENGTH = CAUSAL_LM_CONTEXT
# Prompts of several lengths: empty, unknown characters, and one longer than the context,
# which both paths must cut from the left.
PROMPTS = ["def f(x):", "", "The é€ ", "import os\n" * 5]


class BigramLM:
    """A stand-in for `CausalLM`: the logits at a position depend only on the token there."""

    def __init__(self, table):
        self.table = tf.Variable(table)
        self.weights = [self.table]

    def __call__(self, inputs, training=False):
        return tf.gather(self.table, inputs["token_ids"])

    def build_cache(self, batch_size, max_length):
        return tf.zeros(tf.stack([batch_size, max_length]))

    def call_with_cache(self, token_ids, cache, cache_index):
        logits = tf.gather(self.table, token_ids)
        return logits, logits, cache


def request(url, body=None, method=None):
    """(status, JSON answer) of one HTTP request; `body` is a dict, bytes or None (GET)."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
