"""Point-cloud geometry used by the methods: normalisation, isolated points, noise and smoothing,
normals (estimation, orientation, checks), distance priors, and the scan preparation that runs them."""
