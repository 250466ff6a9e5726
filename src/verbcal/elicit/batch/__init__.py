"""Provider batch APIs: ``elicit --batch`` on OpenAI Batch and Anthropic Message Batches.

Half the live price, answered within 24 hours. The requests are the live ones (same
prompts, structured output and reply parser); every batch is recorded in the reply store
before its submit call is made (:mod:`.ledger`), results are joined on ``custom_id``
(:mod:`.providers`), and a re-run polls and collects instead of submitting again
(:mod:`.runner`). ``verbcal batch status|collect|cancel`` work on a store alone
(:mod:`.admin`).
"""

from __future__ import annotations

from verbcal.elicit.batch.options import BatchOptions

__all__ = ["BatchOptions"]
