"""Beam search: keep the `num_beams` most probable continuations of every row."""

import tensorflow as tf

from tfllm.samplers.sampler import Sampler
from tfllm.samplers.validation import check_length_penalty, check_num_beams

# Log-probability of an impossible candidate; finite so that sums of them never give NaN.
_IMPOSSIBLE = -1e9


class BeamSampler(Sampler):
    """Beam search over the `next` callback, in one `tf.while_loop`.

    Each row is expanded to `num_beams` beams; the buffer, the mask and every tensor of the
    cache nest get a leading dimension of batch * num_beams (beam `b` of row `r` at
    `r * num_beams + b`), and `next` sees them in that layout. At each step every beam
    proposes every token, and the `num_beams` candidates with the highest total
    log-probability survive; the cache rows are reordered with their beams. Only generated
    tokens are scored: at a prompt position (mask True) a beam takes the prompt token at no
    cost. A beam that wrote a stop token is finished: it keeps its score, is not extended, and
    keeps its place among the candidates; the loop ends once every beam has finished.

    The final beams are ranked by `log_probability / length ** length_penalty`, `length`
    being the number of tokens the beam generated (its stop token included). Beams fill the
    same positions unless they stop, so the penalty only matters with stop tokens;
    `length_penalty=0` ranks by total log-probability, larger values favour longer beams.
    Beam search is deterministic and uses no temperature or seed; with `num_beams=1` it is
    greedy decoding.

    Args:
        num_beams: int >= 1, the beams kept per row. Defaults to `5`.
        length_penalty: float, the exponent of the length normalisation. Defaults to `1.0`.
        return_all_beams: bool. If True, return every beam and its score, best first.
            Defaults to `False`.

    Call arguments:
        See `Sampler`.

    Returns the best beam per row, int32 (batch, max_length); with `return_all_beams`, a tuple
    of the beams (batch, num_beams, max_length) and their float32 scores (batch, num_beams),
    sorted by decreasing score.

    Example:

    ```python
    sampler = BeamSampler(num_beams=4)
    tokens = tf.function(lambda p: sampler(next, p, index=1, stop_token_ids=(2,)))(prompt)
    ```
    """

    def __init__(self, num_beams=5, length_penalty=1.0, return_all_beams=False):
        check_num_beams(num_beams)
        check_length_penalty(length_penalty)
        super().__init__(temperature=1.0, seed=None)
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.return_all_beams = return_all_beams

    def __call__(
        self,
        next,
        prompt,
        cache=None,
        index=0,
        mask=None,
        stop_token_ids=None,
        hidden_states=None,
        end_index=None,
    ):
        prompt, index, mask, stop_ids = self.prepare_inputs(prompt, index, mask, stop_token_ids)
        batch_size, max_length = tf.shape(prompt)[0], tf.shape(prompt)[1]
        has_cache = cache is not None

        def expand(x):
            return tf.repeat(x, self.num_beams, axis=0)  # (batch * num_beams, ...)

        prompt, mask = expand(prompt), expand(mask)
        cache = tf.nest.map_structure(expand, cache) if has_cache else ()
        done = self.finished_rows(prompt, mask, index, stop_ids)
        # Only the first beam of a row is live at the start, so the first step does not pick
        # the same token num_beams times.
        first_beam = tf.constant([0.0] + [_IMPOSSIBLE] * (self.num_beams - 1))
        log_probs = tf.tile(first_beam, [batch_size])  # (batch * num_beams,)
        lengths = tf.zeros_like(log_probs, tf.int32)

        def cond(prompt, cache, index, done, log_probs, lengths):
            return tf.logical_not(tf.reduce_all(done))

        def body(prompt, cache, index, done, log_probs, lengths):
            logits, _, cache = next(prompt, cache if has_cache else None, index)
            forced = tf.logical_or(done, tf.gather(mask, index, axis=1))
            token_log_probs = self.candidate_log_probs(logits, forced, prompt, index)
            log_probs, token, beam_rows = self.select_beams(log_probs, token_log_probs)
            prompt, done, lengths = (tf.gather(x, beam_rows) for x in (prompt, done, lengths))
            if has_cache:
                cache = tf.nest.map_structure(lambda x: tf.gather(x, beam_rows), cache)
            free = tf.logical_not(tf.logical_or(done, tf.gather(mask, index, axis=1)))
            lengths += tf.cast(free, tf.int32)
            prompt, done = self.write_tokens(prompt, mask, done, index, token, stop_ids)
            return prompt, cache if has_cache else (), index + 1, done, log_probs, lengths

        prompt, _, _, _, log_probs, lengths = tf.while_loop(
            cond,
            body,
            (prompt, cache, index, done, log_probs, lengths),
            maximum_iterations=self.end(end_index, max_length) - index,
        )
        return self.rank_beams(prompt, log_probs, lengths)

    @staticmethod
    def candidate_log_probs(logits, forced, prompt, index):
        """float32 (batch * num_beams, vocab): the log-probability each beam adds per token.

        A forced beam (finished, or at a prompt position) can only take the token already in
        the buffer, for free.
        """
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        current = tf.gather(prompt, index, axis=1)
        only_current = tf.one_hot(
            current, tf.shape(log_probs)[-1], on_value=0.0, off_value=_IMPOSSIBLE
        )  # (batch * num_beams, vocab)
        return tf.where(forced[:, None], only_current, log_probs)

    def select_beams(self, log_probs, token_log_probs):
        """Keeps the best `num_beams` candidates of every row.

        Returns their total log-probabilities and tokens (batch * num_beams,) and, for each,
        the flat row of the beam it extends, to gather the buffer and the cache with.
        """
        vocabulary_size = tf.shape(token_log_probs)[-1]
        totals = log_probs[:, None] + token_log_probs  # (batch * num_beams, vocab)
        # (batch, num_beams * vocab): a row's candidates side by side, beam-major.
        totals = tf.reshape(totals, [-1, self.num_beams * vocabulary_size])
        best, candidates = tf.math.top_k(totals, k=self.num_beams)  # (batch, num_beams)
        source_beam = candidates // vocabulary_size
        row_start = tf.range(tf.shape(totals)[0])[:, None] * self.num_beams
        beam_rows = tf.reshape(row_start + source_beam, [-1])  # (batch * num_beams,)
        token = tf.reshape(candidates % vocabulary_size, [-1])  # (batch * num_beams,)
        best = tf.reshape(best, [-1])  # (batch * num_beams,)
        # The reshapes lose the static batch size, which the loop variables must keep.
        return tuple(tf.ensure_shape(x, log_probs.shape) for x in (best, token, beam_rows))

    def rank_beams(self, prompt, log_probs, lengths):
        """Sorts each row's beams by length-normalised score; see the class docstring."""
        lengths = tf.maximum(tf.cast(lengths, tf.float32), 1.0)
        scores = log_probs / lengths**self.length_penalty
        scores = tf.reshape(scores, [-1, self.num_beams])  # (batch, num_beams)
        beams = tf.reshape(prompt, [-1, self.num_beams, tf.shape(prompt)[1]])  # (batch, beams, len)
        scores, order = tf.math.top_k(scores, k=self.num_beams)  # sorted, best first
        beams = tf.gather(beams, order, batch_dims=1)
        if self.return_all_beams:
            return beams, scores
        return beams[:, 0]

    def get_config(self):
        return {
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "return_all_beams": self.return_all_beams,
        }
