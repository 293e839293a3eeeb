"""Names, severity constants and reference sizes of the corruptions.

Plain data (no TensorFlow), shared by the family modules and the package's
public API.
"""

# The test suite: the 15 benchmark types of CIFAR-10-C / ImageNet-C, in the
# benchmark's order (`make_cifar_c.py`'s dictionary). `synthetic_frost`
# stands in for the benchmark's frost, whose photographs are not shipped.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "synthetic_frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)

# Held out of every test suite: used only on the validation split (model
# selection, shift-aware smoothing updates), so that choices informed by
# shifted data never see a corruption type they are evaluated on. These are
# the benchmark's four "extra" types, which CIFAR-10-C and ImageNet-C also
# reserve for validation.
HELD_OUT_CORRUPTIONS = (
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)

ALL_CORRUPTIONS = CORRUPTIONS + HELD_OUT_CORRUPTIONS

# Defined on RGB images only (HSV saturation is zero for grey pixels).
RGB_ONLY_CORRUPTIONS = ("saturate",)

# Corruptions whose random draws (angles, shuffles, layers, fields) do not
# depend on the severity: an image gets the same draws at all five
# severities, which then differ by their constants only. With independent
# draws, severities whose constants barely differ (glass blur 1 and 2,
# motion blur 3 and 4 on 32x32 images) would be ordered by chance.
SHARED_DRAWS = (
    "glass_blur",
    "motion_blur",
    "snow",
    "synthetic_frost",
    "spatter",
    "elastic_transform",
)

TABLES = ("cifar10c", "imagenet_c")

# Image side length each table was designed for: pixel constants are
# rescaled by H / REFERENCE_SIZE, and the random layers (snow, frost,
# spatter, the elastic field) are drawn on a grid of this size.
REFERENCE_SIZE = {"cifar10c": 32, "imagenet_c": 224}

# `elastic_transform`'s constants are fractions of this length in the
# reference (`IMSIZE = 32`; `244 * f` for 224x224 images, a typo the
# reference keeps on purpose).
ELASTIC_BASE = {"cifar10c": 32, "imagenet_c": 244}

# Severity constants, severities 1..5, copied from Hendrycks' generators in
# github.com/hendrycks/robustness:
#   "cifar10c":   ImageNet-C/create_c/make_cifar_c.py
#   "imagenet_c": ImageNet-C/create_c/make_imagenet_c.py
# Tuples keep the reference's order of fields:
#   defocus_blur (radius, alias_blur); glass_blur (sigma, max_delta,
#   iterations); motion_blur (radius, sigma); zoom_blur (stop, step) of the
#   zoom factors np.arange(1, stop, step); snow (loc, scale, zoom,
#   threshold, blur radius, blur sigma, blend); fog (strength, wibble
#   decay); synthetic_frost (image weight, frost weight); elastic_transform
#   (alpha, sigma, affine) as fractions of ELASTIC_BASE; spatter (loc,
#   scale, sigma, threshold, intensity or mud sigma, mud); saturate
#   (factor, offset).
CONSTANTS = {
    "cifar10c": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "snow": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "synthetic_frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "elastic_transform": (
            (0, 0, 0.08),
            (0.05, 0.2, 0.07),
            (0.08, 0.06, 0.06),
            (0.1, 0.04, 0.05),
            (0.1, 0.03, 0.03),
        ),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "spatter": (
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ),
        "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    },
    "imagenet_c": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        "snow": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
        "synthetic_frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "elastic_transform": (
            (2, 0.7, 0.1),
            (2, 0.08, 0.2),
            (0.05, 0.01, 0.02),
            (0.07, 0.01, 0.02),
            (0.12, 0.01, 0.02),
        ),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
        "spatter": (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    },
}
