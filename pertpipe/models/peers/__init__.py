"""Peer models: other groups' published models trained by their own packages on our splits (optional extra
``peers``): ``gears`` (GEARS, MIT) and ``state`` (STATE, arc-state, CC BY-NC-SA 4.0, non-commercial). They obey the
same model contract as ours (:mod:`pertpipe.models.base`) and are discovered like any model module."""
