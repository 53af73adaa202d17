"""ntkft.spectral: eigenvalue statistics, kernel-target alignment, Lanczos and plots for kernels."""
from ntkft.spectral.alignment import kernel_target_alignment
from ntkft.spectral.lanczos import lanczos_eigs, lanczos_tridiagonal
from ntkft.spectral.plot import plot_spectrum
from ntkft.spectral.stats import (
    condition_number,
    eigvalsh,
    relative_asymmetry,
    spectrum_stats,
    spectrum_stats_from_eigs,
    symmetric_kernel,
    symmetric_part,
)

__all__ = [
    "condition_number",
    "eigvalsh",
    "kernel_target_alignment",
    "lanczos_eigs",
    "lanczos_tridiagonal",
    "plot_spectrum",
    "relative_asymmetry",
    "spectrum_stats",
    "spectrum_stats_from_eigs",
    "symmetric_kernel",
    "symmetric_part",
]
