"""Small exact models for tests (not part of the package): known maps whose facts tests assert."""

from __future__ import annotations

import torch

from dsrecon.models.base import Model

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


class LinearMap(Model):
    """z -> A z with the identity observation (test-only): exponents are log|eigenvalues|."""

    name = "linear"

    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(torch.as_tensor(a, dtype=torch.float64), requires_grad=False)
        self.obs_dim = self.state_dim = self.a.shape[0]

    def initial_state(self, x0):
        return x0

    def step(self, z):
        return z @ self.a.T

    def jacobian(self, z):
        return self.a.expand(z.shape[0], -1, -1)

    def observe(self, z):
        return z

    def state_from_obs(self, x, z):
        return x


class Lorenz63RK4(Model):
    """The Lorenz-63 flow discretized by one classical RK4 step of dt (float64), as a model.

    ``jacobian`` is the exact derivative of the RK4 map by the chain rule (fast); the test below
    checks it against the contract's torch.func default.
    """

    name = "lorenz63_rk4"

    def __init__(self, dt: float = 0.01):
        super().__init__()
        self.dt = dt
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64), requires_grad=False)
        self.obs_dim = self.state_dim = 3

    @staticmethod
    def rhs(z):
        x, y, w = z.unbind(-1)
        return torch.stack([SIGMA * (y - x), x * (RHO - w) - y, x * y - BETA * w], dim=-1)

    @staticmethod
    def rhs_jacobian(z):  # (B, 3) -> (B, 3, 3)
        x, y, w = z.unbind(-1)
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        rows = [torch.stack([-SIGMA * one, SIGMA * one, zero], -1),
                torch.stack([RHO - w, -one, -x], -1),
                torch.stack([y, x, -BETA * one], -1)]
        return torch.stack(rows, dim=-2)

    def step(self, z):
        dt = self.dt
        k1 = self.rhs(z)
        k2 = self.rhs(z + dt / 2 * k1)
        k3 = self.rhs(z + dt / 2 * k2)
        k4 = self.rhs(z + dt * k3)
        return z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def jacobian(self, z):
        dt = self.dt
        eye = torch.eye(3, dtype=z.dtype, device=z.device)
        k1 = self.rhs(z)
        j1 = self.rhs_jacobian(z)
        z2 = z + dt / 2 * k1
        j2 = self.rhs_jacobian(z2) @ (eye + dt / 2 * j1)
        z3 = z + dt / 2 * self.rhs(z2)
        j3 = self.rhs_jacobian(z3) @ (eye + dt / 2 * j2)
        z4 = z + dt * self.rhs(z3)
        j4 = self.rhs_jacobian(z4) @ (eye + dt * j3)
        return eye + dt / 6 * (j1 + 2 * j2 + 2 * j3 + j4)

    def initial_state(self, x0):
        return x0

    def observe(self, z):
        return z

    def state_from_obs(self, x, z):
        return x


class Scale(Model):
    """z -> a z (test-only); a > 1 diverges."""

    name = "scale"

    def __init__(self, a: float, n: int = 3):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64), requires_grad=False)
        self.obs_dim = self.state_dim = n

    def initial_state(self, x0):
        return x0

    def step(self, z):
        return self.a * z

    def observe(self, z):
        return z

    def state_from_obs(self, x, z):
        return x


def forcing_alphas(kind: str, n: int, model, x) -> torch.Tensor:
    """Per-step alphas ``(n,)`` of one update under forcing option ``kind`` (gtf, agtf, stf, none, tf).

    For adaptive GTF, alpha within one update is the constant the policy holds after one update on
    ``x`` (asserted strictly between 0 and 1, so the mixing is exercised).
    """
    from dsrecon.forcing import AdaptiveGTF, make_forcing
    from dsrecon.rollout import forced_rollout

    if kind == "agtf":
        policy = AdaptiveGTF(every=1)
        policy.update(model, forced_rollout(model, x, 1.0).z_hat, 1)
        assert 0 < policy.alpha < 1
        return policy.alphas(n)
    return {"gtf": make_forcing("gtf", alpha=0.1), "stf": make_forcing("stf", tau=7),
            "none": make_forcing("none"), "tf": make_forcing("tf")}[kind].alphas(n)
