"""Importers of public datasets into a disc dataset folder (SPEC §10), one module per source.

``geometry``: the disc frame and the aligned crop shared by every source;
``spider``: SPIDER's ``.mha`` series, masks and gradings (``spinerank import spider``);
``phantom``: whole-spine phantoms with known geometry, written in a source's exact layout.
"""
