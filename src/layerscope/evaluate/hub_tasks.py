"""The paper's 32 MTEB tasks (SPEC section 5): names, English subsets, and MTEB hub tasks by name.

They register in the task registry as group ``paper32``; their data comes from the Hugging Face hub
(resolving the names needs no network, loading the data does).
"""

from __future__ import annotations

import functools

import mteb
from mteb.abstasks import AbsTask

# the offline suite registers first (group order: offline, paper32), and the unknown-name error raised
# here lists its tasks
from layerscope.evaluate import offline  # noqa: F401
from layerscope.evaluate.registry import register_task, unknown_task
from layerscope.evaluate.seeds import reseed

__all__ = ["PAPER32", "hub_task", "paper32"]

#: The paper's 32 MTEB tasks (SPEC section 5), by MTEB name, with the English subsets that count.
PAPER32: dict[str, tuple[str, ...] | None] = {
    "AmazonCounterfactualClassification": ("en", "en-ext"),
    "AmazonReviewsClassification": ("en",),
    "Banking77Classification": None,
    "EmotionClassification": None,
    "MTOPDomainClassification": ("en",),
    "MTOPIntentClassification": ("en",),
    "MassiveIntentClassification": ("en",),
    "MassiveScenarioClassification": ("en",),
    "ToxicConversationsClassification": None,
    "TweetSentimentExtractionClassification": None,
    "ArxivClusteringS2S": None,
    "BiorxivClusteringS2S": None,
    "MedrxivClusteringS2S": None,
    "RedditClustering": None,
    "StackExchangeClustering": None,
    "TwentyNewsgroupsClustering": None,
    "AskUbuntuDupQuestions": None,
    "MindSmallReranking": None,
    "SciDocsRR": None,
    "StackOverflowDupQuestions": None,
    "BIOSSES": None,
    "SICK-R": None,
    "STS12": None,
    "STS13": None,
    "STS14": None,
    "STS15": None,
    "STS16": None,
    "STS17": ("en-en",),
    "STSBenchmark": None,
    "SprintDuplicateQuestions": None,
    "TwitterSemEval2015": None,
    "TwitterURLCorpus": None,
}


def paper32() -> list[str]:
    """Names of the paper's 32 MTEB tasks (SPEC section 5)."""
    return list(PAPER32)


def hub_task(name: str, seed: int | None = None) -> AbsTask:
    """An MTEB registry task restricted to the test split (and, for the paper's tasks, its English subsets).

    Parameters
    ----------
    name : str
        MTEB task name.
    seed : int, optional
        The task's seed (default: MTEB's, 42).
    """
    subsets = PAPER32.get(name)
    try:
        task = mteb.get_task(name, eval_splits=["test"], hf_subsets=list(subsets) if subsets else None)
    except KeyError:
        raise unknown_task(name) from None
    if seed is not None:
        reseed(task, seed)
    return task


for _name in PAPER32:
    register_task(functools.partial(hub_task, _name), name=_name, groups=("paper32",), local=False)
