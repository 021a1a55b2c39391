"""Pixel-data codecs around pydicom: which plugin decodes each transfer syntax, reduced-resolution
JPEG 2000 / HTJ2K decoding, and the HTJ2K writer pydicom does not have.

* :mod:`~medvl.io.codecs.plugins`: the measured plugin order per transfer syntax;
* :mod:`~medvl.io.codecs.htj2k_plugin`: imagecodecs (OpenJPH) as a pydicom HTJ2K decoding plugin;
* :mod:`~medvl.io.codecs.reduced`: decode only the resolution levels a small target needs;
* :mod:`~medvl.io.codecs.encode`: compress a dataset, HTJ2K included;
* :mod:`~medvl.io.codecs.gpu`: nvImageCodec's GPU plugin first, when installed and on CUDA.
"""
