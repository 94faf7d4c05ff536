"""SpineRankNet training application: data -> model -> loss -> train (-> calibrate
-> evaluate -> report, with the evaluation issue), on the ops of spinerank_ext.

    spinerank synth --out cohort && spinerank train --data cohort --out run --preset tiny
"""
__version__ = "0.1.0"
