"""Decoding samplers and the factory that builds one from generation settings."""

from tfllm.samplers.beam_sampler import BeamSampler
from tfllm.samplers.greedy_sampler import GreedySampler
from tfllm.samplers.random_sampler import RandomSampler
from tfllm.samplers.sampler import Sampler
from tfllm.samplers.top_k_sampler import TopKSampler
from tfllm.samplers.top_p_sampler import TopPSampler
from tfllm.samplers.validation import check_setting

STRATEGIES = ("greedy", "sample", "beam")


def get_sampler(
    strategy,
    *,
    temperature=1.0,
    top_k=None,
    top_p=None,
    num_beams=4,
    seed=None,
    length_penalty=1.0,
):
    """Builds the sampler for a decoding strategy.

    Every value is validated whatever the strategy, so a bad setting fails even where it is
    unused. "greedy" ignores the other settings; "beam" uses `num_beams` and
    `length_penalty`; "sample" draws with `temperature` and `seed` from the whole vocabulary,
    the `top_k` best tokens, the nucleus of mass `top_p`, or top-k then top-p when both are
    set. Temperature 0 makes "sample" greedy.

    Args:
        strategy: "greedy", "sample" or "beam".
        temperature: float >= 0.
        top_k: int >= 1 or None.
        top_p: float with 0 < top_p <= 1, or None.
        num_beams: int >= 1.
        seed: int in [0, 2**31 - 1] or None.
        length_penalty: float.

    Returns:
        A `Sampler`.

    Raises:
        ValueError: naming the parameter, its allowed values and the value received.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={strategy!r}")
    settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "num_beams": num_beams, "seed": seed,
                "length_penalty": length_penalty}
    for name, value in settings.items():
        # None leaves the cuts off; every other setting is checked as given.
        if value is not None or name not in ("top_k", "top_p"):
            check_setting(name, value)
    if strategy == "greedy":
        return GreedySampler()
    if strategy == "beam":
        return BeamSampler(num_beams=num_beams, length_penalty=length_penalty)
    if top_p is not None:
        return TopPSampler(p=top_p, k=top_k, temperature=temperature, seed=seed)
    if top_k is not None:
        return TopKSampler(k=top_k, temperature=temperature, seed=seed)
    return RandomSampler(temperature=temperature, seed=seed)


__all__ = [
    "BeamSampler",
    "GreedySampler",
    "RandomSampler",
    "Sampler",
    "STRATEGIES",
    "TopKSampler",
    "TopPSampler",
    "get_sampler",
]
