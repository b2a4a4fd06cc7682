"""Hook points and module plumbing that cost (almost) nothing while no hook is attached.

Generation runs the model once per token on one position, so there the Python around each
small op is most of the time: ~90 module calls and ~200 submodule/parameter reads a step.
`FastCall` (the base of the model's own modules) and `HookPoint` skip what PyTorch does for
hooks when there are none, and do exactly what PyTorch does when there are.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

# PyTorch's global module hooks (`register_module_forward_hook` & co.) fire on every module call;
# torch mutates these dicts in place and never rebinds them, so the names imported here stay current.
from torch.nn.modules.module import (
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)
from transformer_lens.hook_points import HookPoint as _TLHookPoint


class _Mirror(dict):
    """A module's `_parameters`, `_buffers` or `_modules` that also keeps each entry in the
    module's `__dict__`, so that reading `self.qkv` or `self.weight` is a plain attribute hit.

    Otherwise such a read misses `__dict__` and falls back to `nn.Module.__getattr__`, which on
    Python 3.11 first builds and throws away an AttributeError: ~1 us, and a decode step makes
    ~200 such reads (on 3.12+ the fallback is cheaper, the gain smaller). Every way torch
    changes these registries (`setattr`, `register_*`, `.to()`, `del`, `functional_call`)
    goes through the methods below, so the copies cannot go stale.
    """

    def __init__(self, owner: nn.Module, entries: dict) -> None:
        super().__init__(entries)
        self.owner = owner
        owner.__dict__.update(entries)

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, value)
        self.owner.__dict__[name] = value

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self.owner.__dict__.pop(name, None)

    def pop(self, name: str, *default: Any) -> Any:
        self.owner.__dict__.pop(name, None)
        return super().pop(name, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def clear(self) -> None:
        for name in self:
            self.owner.__dict__.pop(name, None)
        super().clear()

    def __reduce__(self):  # pickled and copied as a plain dict; FastCall.__setstate__ mirrors again
        return dict, (dict(self),)


class FastCall(nn.Module):
    """A module that is cheap to call and to read submodules and parameters from.

    Its call goes straight to `forward` while no hook is attached: PyTorch's own fast path less
    two Python frames (~1 us), and a decode step makes ~50 such calls. With any hook (its own or
    a global one) or after `module.compile()` the call is PyTorch's, so hooks fire as usual.
    (The check is written out: a helper function call would cost as much as it saves.)
    Its registries are `_Mirror`s, so `self.qkv` does not go through `nn.Module.__getattr__`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mirror()

    def _mirror(self) -> None:
        for registry in ("_parameters", "_buffers", "_modules"):
            self.__dict__[registry] = _Mirror(self, self.__dict__[registry])

    def __setstate__(self, state: dict) -> None:  # unpickling, copy.deepcopy
        super().__setstate__(state)
        self._mirror()

    def _replicate_for_data_parallel(self):  # nn.DataParallel: a replica mirrors its own entries
        replica = super()._replicate_for_data_parallel()
        for registry in (self._parameters, self._buffers, self._modules):
            for name in registry:
                replica.__dict__.pop(name, None)
        replica._mirror()
        return replica

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if (
            self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or self._backward_pre_hooks
            or _global_forward_pre_hooks or _global_forward_hooks or _global_backward_pre_hooks or _global_backward_hooks
            or self._compiled_call_impl is not None
        ):
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)


class HookPoint(_TLHookPoint):
    """TransformerLens' `HookPoint`, returning its input at once while no hook is attached (the
    check `FastCall` makes, for one tensor): a decode step passes ~50 hook points, so unused
    hooks stay free.

    With only plain forward hooks (what `add_hook`, `run_with_hooks`, caching and steering
    attach), it runs them itself as PyTorch would, in order, each seeing the last one's output:
    ~1 us instead of ~6 us for PyTorch's general call. Any other hook kind (pre, backward,
    global, with kwargs or always-called) goes through PyTorch's call."""

    def __call__(self, x: Tensor) -> Tensor:
        if (
            self._forward_pre_hooks or self._backward_hooks or self._backward_pre_hooks
            or _global_forward_pre_hooks or _global_forward_hooks or _global_backward_pre_hooks or _global_backward_hooks
        ):
            return super().__call__(x)
        if not self._forward_hooks:
            return x
        if self._forward_hooks_with_kwargs or self._forward_hooks_always_called:
            return super().__call__(x)
        result = x
        for hook in tuple(self._forward_hooks.values()):
            out = hook(self, (x,), result)
            if out is not None:
                result = out
        return result


class Linear(FastCall, nn.Linear):
    """`nn.Linear` with `FastCall`'s call."""


class Dropout(FastCall, nn.Dropout):
    """`nn.Dropout` with `FastCall`'s call that returns its input untouched while it is the
    identity (eval mode or p = 0, as `F.dropout` does) without dispatching to torch."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) if self.training and self.p > 0 else x


def is_observed(*points: _TLHookPoint) -> bool:
    """True when any of these hook points has a forward or backward hook attached.

    Components use it to choose between a fused kernel (nothing is watching) and the
    step-by-step computation that materialises every hooked intermediate.
    """
    for p in points:
        if p.fwd_hooks or p.bwd_hooks:
            return True
    return False
