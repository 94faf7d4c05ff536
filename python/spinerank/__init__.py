"""SpineRankNet training application (data, model, training, evaluation).

Arrives with the training-application issue; it uses the ops of spinerank_ext.
"""
__version__ = "0.1.0"
