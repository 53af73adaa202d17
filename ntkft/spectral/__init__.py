"""ntkft.spectral: eigenvalue statistics, Lanczos and plots for kernels."""
from ntkft.spectral.lanczos import lanczos_eigs
from ntkft.spectral.lanczos import lanczos_tridiagonal
from ntkft.spectral.plot import plot_spectrum
from ntkft.spectral.stats import condition_number
from ntkft.spectral.stats import eigvalsh
from ntkft.spectral.stats import relative_asymmetry
from ntkft.spectral.stats import spectrum_stats
from ntkft.spectral.stats import spectrum_stats_from_eigs
from ntkft.spectral.stats import symmetric_kernel

__all__ = [
    "condition_number",
    "eigvalsh",
    "lanczos_eigs",
    "lanczos_tridiagonal",
    "plot_spectrum",
    "relative_asymmetry",
    "spectrum_stats",
    "spectrum_stats_from_eigs",
    "symmetric_kernel",
]
