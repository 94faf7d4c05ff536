"""Importers of public datasets into a disc dataset folder (SPEC §10), one module per source.

``geometry``: the disc frame and the aligned crop shared by every source;
``spider``: SPIDER's ``.mha`` series, masks and gradings (``spinerank import spider``);
``dicom``, ``rsna``: DICOM series and the RSNA 2024 studies (``spinerank import rsna``);
``phantom``: the whole-spine phantom with known geometry, written in a source's exact layout
by ``spider_phantom`` and ``rsna_phantom`` (``phantom_dicom``: its DICOM slice stacks).
"""
