"""Diffusion processes: the DDPM schedule and samplers (`ddpm`), the Ornstein-Uhlenbeck process (`ou`) and
uniform-transition discrete diffusion (`d3pm`)."""
