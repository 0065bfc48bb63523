"""The vocabulary: constants, errors, registries, paths, specs, config, I/O and the architecture
description. Torch-free."""
