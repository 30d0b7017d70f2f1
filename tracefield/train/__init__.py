"""Training on synthetic scenes (:mod:`.loop`), its objective (:mod:`.losses`) and evaluation (:mod:`.evaluate`)."""
