"""The init lab wing: one network trained under many weight initializations (``experiment``) and
its plots and report (``report``)."""
