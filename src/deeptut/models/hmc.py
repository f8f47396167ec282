"""Chapter "Hybrid Monte-Carlo Sampling" (hmc/hmc.py, hmc/test_hmc.py).

HMC draws from p(x) ~ exp(-E(x)) for any differentiable energy E: each draw gives every chain a fresh
Gaussian momentum, follows Hamilton's equations for `n_steps` leapfrog steps of size `stepsize`, and keeps
the end point with the Metropolis probability min(1, exp(H_old - H_new)). The step size is adapted towards a
target acceptance rate (x stepsize_inc above it, x stepsize_dec below, clipped to [stepsize_min,
stepsize_max]), the acceptance rate being an exponential moving average of the chains' mean acceptance
(weight 1 - avg_acceptance_slowness on the newest draw). The defaults are hmc.py's
`new_from_shared_positions`.

Many chains run in parallel as the rows of one [n_chains, dim] tensor, on any device. The energy is any torch
function of that tensor returning [n_chains] energies. Momenta and the accept/reject uniforms come from one
torch.Generator in hmc.py's order (momenta [n_chains, dim], then uniforms [n_chains], every draw); Theano's
RandomStreams cannot be reproduced, so the chains differ from the tutorial's draw for draw, not in law.

The chapter's test target (`gaussian_target`) is test_hmc.py's: numpy RandomState(seed): mean rand(dim) * 10,
covariance rand(dim, dim) symmetrised with a unit diagonal, then starting positions randn(n_chains, dim).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from deeptut.errors import ConfigError, TrainingError

Energy = Callable[[torch.Tensor], torch.Tensor]  # positions [n_chains, dim] -> energies [n_chains]


# --- the chapter's target: a Gaussian drawn as test_hmc.py draws it ------------------------------------------


def gaussian_target(dim: int, n_chains: int = 3, seed: int = 123) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu [dim], cov [dim, dim], initial positions [n_chains, dim]), float64, in test_hmc.py's draw order
    from numpy RandomState(seed): mean rand(dim) * 10, cov rand(dim, dim) made symmetric with ones on the
    diagonal, positions randn(n_chains, dim). seed 123, dim 5 gives the published target."""
    rng = np.random.RandomState(seed)
    mu = rng.rand(dim) * 10
    cov = rng.rand(dim, dim)
    cov = (cov + cov.T) / 2.0
    cov[np.arange(dim), np.arange(dim)] = 1.0
    positions = rng.randn(n_chains, dim)
    return mu, cov, positions


def smallest_eigenvalue(cov: np.ndarray | torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(torch.as_tensor(cov, dtype=torch.float64)).min())


class GaussianEnergy(nn.Module):
    """E(x) = 0.5 (x - mu)^T cov^-1 (x - mu) per row: test_hmc.py's `gaussian_energy`. A covariance that is
    not symmetric positive definite is refused with its smallest eigenvalue (the inverse would not be a
    precision matrix: the energy would be unbounded below and the chains would run off)."""

    def __init__(self, mu: np.ndarray | torch.Tensor, cov: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        mu = torch.as_tensor(mu, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        dim = mu.shape[0]
        if mu.ndim != 1 or cov.shape != (dim, dim):
            raise ConfigError(f"the target needs a mean [dim] and a covariance [dim, dim]; got "
                              f"{tuple(mu.shape)} and {tuple(cov.shape)}")
        if not (torch.isfinite(mu).all() and torch.isfinite(cov).all()):
            raise ConfigError("the target's mean and covariance must be finite")
        if not torch.allclose(cov, cov.T, rtol=0, atol=1e-12):
            raise ConfigError("the covariance is not symmetric")
        low = smallest_eigenvalue(cov)
        if not low > 0:
            raise ConfigError(f"the covariance is not positive definite: its smallest eigenvalue is {low:.6g}")
        self.register_buffer("mu", mu)  # [dim]
        self.register_buffer("cov", cov)  # [dim, dim]
        self.register_buffer("cov_inv", torch.linalg.inv(cov))  # [dim, dim], numpy.linalg.inv in the test

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, dim] -> energies [n]."""
        d = x - self.mu  # [n, dim]
        return 0.5 * ((d @ self.cov_inv) * d).sum(dim=1)

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(energies [n], dE/dx [n, dim]) in closed form: dE/dx = (x - mu) (A + A^T) / 2, A = cov^-1 (what
        autograd gives, up to rounding, at a tenth of its cost on 3 x 5 numbers). The sampler uses a
        module's `energy_and_grad` where it has one, autograd otherwise."""
        d = x - self.mu  # [n, dim]
        a = d @ self.cov_inv  # [n, dim]
        return 0.5 * (a * d).sum(dim=1), 0.5 * (a + d @ self.cov_inv.T)


# --- the sampler's pieces, named as in hmc.py ----------------------------------------------------------------


def kinetic_energy(vel: torch.Tensor) -> torch.Tensor:
    """vel [n, dim] -> 0.5 |v|^2 per row [n] (unit masses)."""
    return 0.5 * (vel ** 2).sum(dim=1)


def hamiltonian(pos: torch.Tensor, vel: torch.Tensor, energy_fn: Energy) -> torch.Tensor:
    """[n]: potential plus kinetic energy."""
    return energy_fn(pos) + kinetic_energy(vel)


def energy_grad(pos: torch.Tensor, energy_fn: Energy) -> tuple[torch.Tensor, torch.Tensor]:
    """(E(pos) [n], dE/dpos [n, dim]) by autograd (or the energy's own `energy_and_grad`); the rows are independent chains, so the gradient of the
    summed energy is each chain's own (T.grad(energy_fn(pos).sum(), pos) in hmc.py)."""
    closed_form = getattr(energy_fn, "energy_and_grad", None)
    if closed_form is not None:
        return closed_form(pos)
    with torch.enable_grad():
        p = pos.detach().requires_grad_(True)
        energy = energy_fn(p)
        (grad,) = torch.autograd.grad(energy.sum(), p)
    return energy.detach(), grad


def simulate_dynamics(initial_pos: torch.Tensor, initial_vel: torch.Tensor, stepsize: torch.Tensor,
                      n_steps: int, energy_fn: Energy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`n_steps` leapfrog steps from (initial_pos, initial_vel): a half step of the velocity, then n_steps - 1
    full steps of position and velocity, a last position step and a last half step of the velocity (hmc.py's
    scan). Returns (final_pos [n, dim], final_vel [n, dim], the gradient at final_pos [n, dim])."""
    _, grad = energy_grad(initial_pos, energy_fn)
    vel = initial_vel - 0.5 * stepsize * grad  # vel(t + eps/2)
    pos = initial_pos + stepsize * vel  # pos(t + eps)
    for _ in range(n_steps - 1):
        _, grad = energy_grad(pos, energy_fn)
        vel = vel - stepsize * grad  # vel(t + (m + 1/2) eps)
        pos = pos + stepsize * vel  # pos(t + (m + 1) eps)
    _, grad = energy_grad(pos, energy_fn)
    vel = vel - 0.5 * stepsize * grad  # vel(t + n eps)
    return pos, vel, grad


def metropolis_hastings_accept(energy_prev: torch.Tensor, energy_next: torch.Tensor,
                               uniform: torch.Tensor) -> torch.Tensor:
    """[n] bool: exp(H_prev - H_next) - u >= 0, hmc.py's rule (u ~ U[0, 1) per chain)."""
    return (torch.exp(energy_prev - energy_next) - uniform) >= 0


def hmc_move(generator: torch.Generator, positions: torch.Tensor, energy_fn: Energy, stepsize: torch.Tensor,
             n_steps: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One HMC proposal for every chain: momenta, leapfrog, Metropolis. Returns (accept [n] bool,
    final_pos [n, dim], the energies and gradient used, for the finiteness checks)."""
    initial_vel = torch.randn(positions.shape, generator=generator, dtype=positions.dtype,
                              device=positions.device)  # [n, dim]
    final_pos, final_vel, final_grad = simulate_dynamics(positions, initial_vel, stepsize, n_steps, energy_fn)
    h_prev = hamiltonian(positions, initial_vel, energy_fn)  # [n]
    h_next = hamiltonian(final_pos, final_vel, energy_fn)  # [n]
    uniform = torch.rand(positions.shape[0], generator=generator, dtype=positions.dtype,
                         device=positions.device)  # [n]
    accept = metropolis_hastings_accept(h_prev, h_next, uniform)
    return accept, final_pos, {"energy": h_prev, "proposal energy": h_next, "gradient": final_grad}


def hmc_updates(positions: torch.Tensor, stepsize: torch.Tensor, avg_acceptance_rate: torch.Tensor,
                final_pos: torch.Tensor, accept: torch.Tensor, target_acceptance_rate: float,
                stepsize_inc: float, stepsize_dec: float, stepsize_min: float, stepsize_max: float,
                avg_acceptance_slowness: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(new positions, new stepsize, new average acceptance rate), hmc.py's updates. The step size moves on
    the average *before* this draw's acceptance is folded in, as in hmc.py (both updates read the old
    shared values)."""
    new_positions = torch.where(accept[:, None], final_pos, positions)  # [n, dim]
    new_stepsize = torch.where(avg_acceptance_rate > target_acceptance_rate, stepsize * stepsize_inc,
                               stepsize * stepsize_dec).clamp(stepsize_min, stepsize_max)
    new_rate = (avg_acceptance_slowness * avg_acceptance_rate
                + (1.0 - avg_acceptance_slowness) * accept.to(avg_acceptance_rate.dtype).mean())
    return new_positions, new_stepsize, new_rate


class HMCSampler:
    """hmc.py's HMC_sampler: `draw()` advances every chain by one HMC move and returns the positions.

    The state (positions, stepsize, avg_acceptance_rate, the generator, the count of draws) is
    `state_dict()` / `load_state_dict()`: restoring it and drawing on gives bit-identical draws."""

    def __init__(self, positions: torch.Tensor, energy_fn: Energy, *, initial_stepsize: float = 0.01,
                 target_acceptance_rate: float = 0.9, n_steps: int = 20, stepsize_dec: float = 0.98,
                 stepsize_min: float = 0.001, stepsize_max: float = 0.25, stepsize_inc: float = 1.02,
                 avg_acceptance_slowness: float = 0.9, seed: int = 12345,
                 generator: torch.Generator | None = None) -> None:
        if positions.ndim != 2:
            raise ConfigError(f"positions must be [n_chains, dim], got shape {tuple(positions.shape)}")
        if n_steps < 1:
            raise ConfigError(f"n_steps (leapfrog steps per draw) must be >= 1, got {n_steps}")
        self.positions = positions.detach().clone()  # [n_chains, dim]
        self.energy_fn = energy_fn
        dev, dt = positions.device, positions.dtype
        self.stepsize = torch.tensor(initial_stepsize, dtype=dt, device=dev)  # 0-d, on the device
        self.avg_acceptance_rate = torch.tensor(target_acceptance_rate, dtype=dt, device=dev)  # hmc.py starts it
        #   at the target
        self.target_acceptance_rate, self.n_steps = target_acceptance_rate, n_steps
        self.stepsize_dec, self.stepsize_inc = stepsize_dec, stepsize_inc
        self.stepsize_min, self.stepsize_max = stepsize_min, stepsize_max
        self.avg_acceptance_slowness = avg_acceptance_slowness
        self.generator = generator if generator is not None else torch.Generator(device=dev).manual_seed(seed)
        self.n_draws = 0  # draws made so far (the next one is draw n_draws + 1)

    def draw(self) -> torch.Tensor:
        """One HMC move of every chain; returns a copy of the positions [n_chains, dim]. A non-finite energy
        or gradient stops with a TrainingError naming the draw (1-based) and the chains."""
        n = self.n_draws + 1
        accept, final_pos, used = hmc_move(self.generator, self.positions, self.energy_fn, self.stepsize,
                                           self.n_steps)
        for what, value in used.items():
            bad = ~torch.isfinite(value.reshape(len(value), -1)).all(dim=1)  # [n_chains]
            if bool(bad.any()):
                chains = ", ".join(str(int(i)) for i in bad.nonzero().flatten()[:5])
                raise TrainingError(f"draw {n}: non-finite {what} in chain(s) {chains} "
                                    f"(step size {float(self.stepsize):.6g}); the energy function or its gradient "
                                    f"overflowed: check the target, or lower the step size")
        self.positions, self.stepsize, self.avg_acceptance_rate = hmc_updates(
            self.positions, self.stepsize, self.avg_acceptance_rate, final_pos, accept,
            self.target_acceptance_rate, self.stepsize_inc, self.stepsize_dec, self.stepsize_min,
            self.stepsize_max, self.avg_acceptance_slowness)
        self.n_draws = n
        return self.positions.clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"positions": self.positions, "stepsize": self.stepsize,
                "avg_acceptance_rate": self.avg_acceptance_rate,
                "generator": self.generator.get_state(), "n_draws": torch.tensor(self.n_draws)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        dev, dt = self.positions.device, self.positions.dtype
        if tuple(state["positions"].shape) != tuple(self.positions.shape):
            raise ConfigError(f"positions of shape {tuple(state['positions'].shape)} for a sampler of "
                              f"{tuple(self.positions.shape)}")
        self.positions = state["positions"].to(dev, dt).clone()
        self.stepsize = state["stepsize"].to(dev, dt).clone()
        self.avg_acceptance_rate = state["avg_acceptance_rate"].to(dev, dt).clone()
        self.generator.set_state(state["generator"].cpu())
        self.n_draws = int(state["n_draws"])
