"""Models: the paper's base regressor f (:mod:`.regressor`) and the set-sum g(S) = sum f(x_k)
with its memory-bounded path (:mod:`.setsum`); :mod:`.memory` measures a step's peak bytes."""
