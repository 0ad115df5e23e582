"""Priors: the Gaussian prior and its bound form, the authors' file format, SWAG, prior learning."""
