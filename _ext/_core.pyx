# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled core of cargohold: the hot paths, each with a pure-Python twin in
cargohold/_fallback.py that must give identical results."""

include "varint.pxi"
include "lmdbpages.pxi"
include "mark.pxi"
include "bolt.pxi"
include "fsck.pxi"
include "containerd.pxi"
include "keys.pxi"
include "records.pxi"
include "msgrecords.pxi"
include "fsdir.pxi"
