"""Fuzz the front door: generated and mutated expression strings (random tokens, deep nesting, huge
numbers, unicode, NUL bytes) give only ``ExprSyntaxError``/``ValueError`` from ``nlfs.parse`` and
``nlfs.Loss``, and, when accepted, a finite loss and gradient on the torch and cpp backends.

``NLFS_FUZZ_N`` strings (default 600: CI's size, a few seconds); the issue's full run is
``NLFS_FUZZ_N=10000 pytest tests/test_fuzz.py``."""

import os
import random

import torch

import nlfs
from nlfs.backends import available_backends
from nlfs.expr import ExprSyntaxError

N = int(os.environ.get("NLFS_FUZZ_N", "600"))

_TOKENS = (["y", "p", "z", "C", "alpha", "k_1", "x", "log", "exp", "sqrt", "pdiv", "aq", "max", "min", "bessel_i0",
            "sinh", "softplus", "+", "-", "*", "/", "**", "(", ")", ",", " ", "0", "1", "2", "3", "0.5", "1e-7",
            "1e308", "1e39", "3.4028235e38", "1e-400", "9" * 400, ".", "e", "1e", "\x00", "é", "π", "\u200b",
            "\u00a0", "٣", "𝑥", "\n", "\t", "#", "**-", "--", "(((", ")))"])
_SEEDS = [str(nlfs.losses.get(n).expr) for n in nlfs.losses.names()] + [
    "-y*log(p) + 0.5*y*(1-p)**2", "exp(alpha - p - p*y) - cos(cos(sin(p)))", "pdiv(y, p - 1e-7)",
    "bessel_i1(1/(p+1e-30))*y", "max(1e38, p)*y", "(p-1)**-3*y", "aq(z, y) * sinh(z)"]


def _random_tokens(rng):
    return "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 30)))


def _nested(rng):
    depth = rng.choice([5, 50, 99, 100, 101, 150, 250, 1000])
    kind = rng.choice(["paren", "neg", "call", "pow", "sum"])
    if kind == "paren":
        return "(" * depth + "p" + ")" * depth
    if kind == "neg":
        return "-" * depth + "p"
    if kind == "call":
        return "exp(" * depth + "p" + ")" * depth
    if kind == "pow":
        return "p" + "**p" * depth
    return "+".join(["p*y"] * depth)


def _mutated(rng):
    s = list(rng.choice(_SEEDS))
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        i = rng.randrange(len(s) + 1)
        if op < 0.4:
            s.insert(i, rng.choice(_TOKENS))
        elif op < 0.7 and s:
            del s[min(i, len(s) - 1)]
        elif s:
            s[min(i, len(s) - 1)] = rng.choice(_TOKENS)
    return "".join(s)


def fuzz_strings(n, seed=0):
    rng = random.Random(seed)
    makers = [_random_tokens, _nested, _mutated, _mutated]
    return [rng.choice(makers)(rng) for _ in range(n)]


def _check_accepted(expr, backends, z, targets):
    for backend in backends:
        try:
            loss = nlfs.Loss(expr, backend=backend, constants={k: 0.7 for k in expr.constants})
        except ValueError:  # e.g. a loss that does not read the prediction
            continue
        for t in targets:
            x = z.clone().requires_grad_(True)
            value = loss(x, t)
            (g,) = torch.autograd.grad(value, x)
            assert torch.isfinite(value) and torch.isfinite(g).all(), (str(expr), backend)


def test_fuzzed_strings_raise_only_value_errors_and_accepted_ones_are_finite():
    backends = ["torch"] + (["cpp"] if not available_backends()["cpp"] else [])
    z = torch.randn(4, 5) * 3
    targets = [torch.tensor([0, 4, 2, 1]), torch.softmax(torch.randn(4, 5), 1)]
    accepted = 0
    for text in fuzz_strings(N):
        try:
            expr = nlfs.parse(text)
        except ExprSyntaxError:
            continue  # any other exception (RecursionError, OverflowError...) fails the test
        accepted += 1
        _check_accepted(expr, backends, z, targets)
    assert accepted > N // 20  # the mutations keep enough strings valid to exercise the backends


def test_nesting_limits_are_syntax_errors():
    for text in ["(" * 101 + "p" + ")" * 101, "-" * 101 + "p", "exp(" * 101 + "p" + ")" * 101,
                 "p" + "**p" * 101, "+".join(["p"] * 202), "-1e39*p", "1e308**2", "max(1e308, p)"]:
        try:
            nlfs.parse(text)
        except ExprSyntaxError:
            continue
        raise AssertionError(f"accepted {text[:40]!r}")
    nlfs.parse("(" * 100 + "p" + ")" * 100)
    nlfs.parse("+".join(["p"] * 201))  # 200 deep
