"""Witte et al.'s protocols: in-context refinement by an expert, and ratings of replies to real transcripts.

Two registered protocols share the client and expert roles (:mod:`.roles`) and the paired tests
(:mod:`.stats`): ``refinement`` (:mod:`.refinement`: six exchanges with a rating client, feedback from an
expert, a generic sentence or none between them) and ``transcript_rating`` (:mod:`.transcript_rating`: the
client rates the human therapist's next reply to a real snippet, each variant's, and the expert's revision).
Both are off by default; their options are the ``refinement_*`` and ``transcript_*`` fields of
:class:`~cbtgym.benchmark.config.BenchmarkConfig`.
"""
