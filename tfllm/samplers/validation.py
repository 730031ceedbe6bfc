"""Generation settings: one rule and one wording per setting, for every place that checks them.

`SETTINGS` holds each setting once. Three callers check values against it, each naming the
setting its own way:

- the samplers' constructors and `get_sampler` (`check_setting`): the parameter name, `top_k`
  or `TopKSampler`'s `k`, in a `ValueError`;
- the command line (`flag_error`): the `--flag`, in a one-line error;
- the serving graph (`request_check`): the request field, in an assertion op. A request sets
  every field, so its conventions differ where a Python caller passes None: `top_k` 0 and
  `top_p` 1 turn the cut off, a `seed` below 0 draws a fresh one. `Setting.request` holds
  those rules.

A bad setting thus fails when the sampler or the request is checked, not deep inside a traced
loop, with the same words wherever it is checked.
"""

import dataclasses
import numbers
import typing

import tensorflow as tf

# Stateless random ops compile under XLA only with int32 seeds.
MAX_SEED = 2**31 - 1


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one convention accepts for a setting, and how it says so."""

    wording: str
    """The requirement, "{name} must be ...": `{name}` is the name shown; a setting that depends
    on the context also has `{max_length}` and `{limit}` (max_length - 1)."""
    accepts: typing.Optional[typing.Callable]
    """Whether a value is valid: `accepts(value)`, or `accepts(value, max_length)` for a setting
    that depends on the context; a bool for a Python value, a bool tensor for a request's scalar
    tensor. None when every value of the field's dtype is valid."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One generation setting: its names and its rules."""

    name: str
    """The keyword of `get_sampler`, and the field of a serving request."""
    flag: typing.Optional[str]
    """The command-line flag, or None when the command line does not set it."""
    value: Rule
    """The rule for a Python value (samplers, `get_sampler`, the command line)."""
    request: typing.Optional[Rule] = None
    """The rule for a serving request's scalar tensor, or None when no request sets it."""
    in_context: bool = False
    """Whether the rules depend on the model's context, `max_length`."""


SETTINGS = {setting.name: setting for setting in (
    Setting(
        "temperature", "--temperature",
        Rule("{name} must be a number >= 0 (0 picks the most probable token)", lambda v: _is_real(v) and v >= 0),
        # A request's float can be inf or NaN; only finite temperatures are served.
        Rule("{name} must be a finite number >= 0 (0 is greedy)",
             lambda t: tf.logical_and(t >= 0.0, tf.math.is_finite(t))),
    ),
    Setting(
        "top_k", "--top-k",
        Rule("{name} must be an integer >= 1", lambda v: _is_int(v) and v >= 1),
        Rule("{name} must be >= 0 (0 turns it off)", lambda t: t >= 0),
    ),
    Setting(
        "top_p", "--top-p",
        Rule("{name} must be a number with 0 < {name} <= 1", lambda v: _is_real(v) and 0 < v <= 1),
        Rule("{name} must be > 0 and <= 1 (1 turns it off)", lambda t: tf.logical_and(t > 0.0, t <= 1.0)),
    ),
    Setting(
        "seed", "--seed",
        Rule(f"{{name}} must be None or an integer in [0, {MAX_SEED}]",
             lambda v: v is None or (_is_int(v) and 0 <= v <= MAX_SEED)),
        Rule("{name} may be any integer (below 0 draws a fresh seed)", None),
    ),
    Setting(
        "num_beams", "--num-beams",
        Rule("{name} must be an integer >= 1", lambda v: _is_int(v) and v >= 1),
    ),
    Setting(
        "length_penalty", None,
        Rule("{name} must be a real number (0 ranks beams by total log-probability)",
             lambda v: _is_real(v) and v == v),
    ),
    Setting(
        "max_new_tokens", "--max-new-tokens",
        Rule("{name} must be an integer in [1, {limit}] for a {max_length}-token context",
             lambda v, max_length: _is_int(v) and 1 <= v < max_length),
        Rule("{name} must be between 1 and {limit} for a {max_length}-token context",
             lambda t, max_length: tf.logical_and(t >= 1, t < max_length)),
        in_context=True,
    ),
)}


def requirement(setting, shown=None, request=False, max_length=None):
    """The requirement sentence of `setting`, naming it `shown` (defaults to its name).

    `request` picks the serving request's rule; `max_length`, the model's context, is needed by
    the settings that depend on it and ignored by the others.
    """
    rule = _rule(setting, request)
    context = _context(setting, max_length)
    if context:
        context["limit"] = max_length - 1
    return rule.wording.format(name=shown or setting, **context)


def accepts(setting, value, request=False, max_length=None):
    """Whether `value` is valid for `setting`: a bool, or a bool tensor for a `request` tensor."""
    return _rule(setting, request).accepts(value, **_context(setting, max_length))


def check_setting(setting, value, shown=None, max_length=None):
    """Raises a `ValueError` naming the parameter `shown` unless `value` is valid."""
    if not accepts(setting, value, max_length=max_length):
        shown = shown or setting
        raise ValueError(f"{requirement(setting, shown, max_length=max_length)}. Received: {shown}={value!r}")


def flag_error(setting, value, max_length=None):
    """The command line's message for an invalid `value`, naming the setting's flag; None if valid."""
    if accepts(setting, value, max_length=max_length):
        return None
    reason = requirement(setting, max_length=max_length)
    return f"{SETTINGS[setting].flag} {value} is invalid: {reason}; pass a valid value"


def request_check(setting, value, max_length=None):
    """`(condition, message)` of a request's scalar tensor `value`, or None if any value is valid.

    The condition is a bool tensor; the message ends in "Received: <field> =", for an assertion
    op to print the value after it.
    """
    if _rule(setting, request=True).accepts is None:
        return None
    message = f"{requirement(setting, request=True, max_length=max_length)}. Received: {setting} ="
    return accepts(setting, value, request=True, max_length=max_length), message


def _rule(setting, request):
    rule = SETTINGS[setting].request if request else SETTINGS[setting].value
    if rule is None:
        raise ValueError(f"a serving request does not set {setting}; pass one of "
                         f"{sorted(name for name, s in SETTINGS.items() if s.request)}")
    return rule


def _context(setting, max_length):
    """The keyword arguments of `setting`'s rules: `max_length` where they depend on it."""
    if not SETTINGS[setting].in_context:
        return {}
    if max_length is None:
        raise ValueError(f"{setting} depends on the model's context; pass max_length")
    return {"max_length": max_length}


# The checks of the samplers' constructors, by parameter; `name` is the keyword they are given as.
def check_temperature(temperature):
    check_setting("temperature", temperature)


def check_seed(seed):
    check_setting("seed", seed)


def check_top_k(top_k, name="top_k"):
    check_setting("top_k", top_k, name)


def check_top_p(top_p, name="top_p"):
    check_setting("top_p", top_p, name)


def check_num_beams(num_beams):
    check_setting("num_beams", num_beams)


def check_length_penalty(length_penalty):
    check_setting("length_penalty", length_penalty)
