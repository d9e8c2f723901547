"""Diffusion processes: the DDPM schedule and samplers (`ddpm`) and the Ornstein-Uhlenbeck process (`ou`)."""
