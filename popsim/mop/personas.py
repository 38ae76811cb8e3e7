"""Persona synthesis (MoP step 1): K-means over encoded population texts, one LM summary per cluster.

Each persona keeps its text, cluster size, the attribute composition of its members (so subgroups can
be traced back) and where its text came from: ``lm`` (the LM's summary), ``fallback`` (the LM's summary
was empty or degenerate, or, when checked, sat nearer another cluster's centroid than its own, so a
description was built from the cluster's distinctive terms and attributes), or ``user`` (given by the user).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer

from popsim.embed import SentenceEncoder
from popsim.exceptions import DataError
from popsim.lm.base import Chat, LanguageModel

__all__ = ["Persona", "synthesize_personas", "user_personas", "attribute_composition", "is_degenerate"]

SUMMARY_REQUEST = (
    "Here are texts written by people from one group:\n{examples}\n\n"
    "Describe this kind of person in one sentence that starts with 'You are'. "
    "Mention their attitude and style."
)


@dataclass
class Persona:
    text: str
    size: int = 0
    source: str = "user"
    composition: dict = field(default_factory=dict)
    terms: list[str] = field(default_factory=list)
    rejected: str = ""  # the LM's summary when the check replaced it with the fallback

    def to_dict(self) -> dict:
        return asdict(self)


def attribute_composition(attributes: pd.DataFrame | None) -> dict:
    """Share of each category (top 3) for categorical columns, median for numeric ones."""
    if attributes is None or attributes.empty:
        return {}
    out: dict = {}
    for col in attributes.columns:
        values = attributes[col].dropna()
        if values.empty:
            continue
        if pd.api.types.is_numeric_dtype(values) and values.nunique() > 8:
            out[col] = {"median": float(values.median())}
        else:
            shares = values.astype(str).value_counts(normalize=True).head(3)
            out[col] = {str(k): round(float(v), 3) for k, v in shares.items()}
    return out


_ASSISTANT = re.compile(r"\b(ai|assistant|language model|chatbot|smollm|hugging ?face)\b", re.IGNORECASE)


def is_degenerate(text: str, others: Sequence[str] = ()) -> bool:
    """Empty, too short, repetitive, not a description, the LM's self-description, or a duplicate."""
    words = re.findall(r"[A-Za-z']+", text.lower())
    if len(words) < 5:
        return True
    if len(set(words)) / len(words) < 0.4:
        return True
    if not text.lower().startswith("you"):
        return True
    if _ASSISTANT.search(text):  # a small LM describing itself ("a helpful AI assistant named SmolLM")
        return True
    return any(text.strip().lower() == o.strip().lower() for o in others)


def _traits(composition: dict) -> list[str]:
    """What most of a cluster shares: numeric medians and categories held by at least half of it."""
    traits = []
    for col, shares in composition.items():
        if "median" in shares:
            traits.append(f"{col} around {shares['median']:g}")
        elif shares:
            top, share = next(iter(shares.items()))
            if share >= 0.5:
                traits.append(f"{col} {top}")
    return traits


def _facts(terms: Sequence[str], composition: dict) -> str:
    """What sets a cluster apart, for a summary request: its distinctive words and shared attributes."""
    lines = []
    if terms:
        lines.append("Words they use more than other people: " + ", ".join(terms[:6]) + ".")
    traits = _traits(composition)
    if traits:
        lines.append("What most of them have in common: " + ", ".join(traits[:4]) + ".")
    return "\n".join(lines)


def _fallback_text(terms: Sequence[str], composition: dict) -> str:
    traits = _traits(composition)
    who = ("someone with " + ", ".join(traits[:4])) if traits else "a member of this group"
    about = ", ".join(terms[:6]) if terms else "everyday topics"
    return f"You are {who}, who often writes about {about}."


def _clean_summary(text: str) -> str:
    text = text.strip().split("\n")[0].strip()
    if not text.lower().startswith("you"):
        text = "You are " + text
    sentences = re.split(r"(?<=[.!?])\s", text)
    return sentences[0].strip()


def synthesize_personas(
    texts: Sequence[str],
    embeddings: np.ndarray,
    *,
    n_personas: int,
    lm: LanguageModel,
    attributes: pd.DataFrame | None = None,
    examples_per_persona: int = 5,
    max_example_chars: int = 300,
    seed: int = 0,
    summary_request: str = SUMMARY_REQUEST,
    check_encoder: SentenceEncoder | None = None,
) -> tuple[list[Persona], np.ndarray]:
    """Cluster ``texts`` (by ``embeddings``) into ``n_personas`` and summarise each cluster with ``lm``.

    ``summary_request`` may hold ``{examples}`` (a few member texts) and ``{facts}`` (the cluster's
    distinctive words and shared attributes). With ``check_encoder`` (the encoder that made
    ``embeddings``), a summary is kept only if its embedding is nearer its own cluster's centroid than
    any other cluster's; otherwise the fallback description replaces it. A small LM's summaries are often
    generic ("a person with a unique perspective and style that defies categorization"): they fit every
    cluster about equally, so neither a reader nor the persona gate can tell the personas apart.

    Returns the personas and each text's cluster label.
    """
    if n_personas < 1:
        raise DataError(f"mop.n_personas must be >= 1; got {n_personas}")
    if n_personas > len(texts):
        raise DataError(
            f"mop.n_personas ({n_personas}) is more than the {len(texts)} texts to cluster; "
            "lower n_personas or add data"
        )
    labels = KMeans(n_clusters=n_personas, n_init=4, random_state=seed).fit_predict(embeddings)
    rng = np.random.default_rng(seed)
    tfidf = TfidfVectorizer(stop_words="english", max_features=5000, token_pattern=r"(?u)\b[a-zA-Z]{3,}\b")
    try:
        matrix = tfidf.fit_transform(texts)
        vocab = np.array(tfidf.get_feature_names_out())
    except ValueError:  # no usable words at all
        matrix, vocab = None, np.array([])
    members_of = [np.flatnonzero(labels == k) for k in range(n_personas)]
    compositions = [attribute_composition(None if attributes is None else attributes.iloc[m]) for m in members_of]
    terms_of: list[list[str]] = []
    for members in members_of:
        terms: list[str] = []
        if matrix is not None and len(vocab):
            inside = np.asarray(matrix[members].mean(axis=0)).ravel()
            outside = np.asarray(matrix[np.setdiff1d(np.arange(len(texts)), members)].mean(axis=0)).ravel()
            terms = list(vocab[np.argsort(-(inside - outside))[:8]])
        terms_of.append(terms)
    requests = []
    for members, terms, comp in zip(members_of, terms_of, compositions, strict=True):
        pick = rng.choice(members, size=min(examples_per_persona, len(members)), replace=False)
        examples = "\n".join("- " + texts[i][:max_example_chars].replace("\n", " ") for i in pick)
        request = summary_request.replace("{examples}", examples).replace("{facts}", _facts(terms, comp))
        requests.append(Chat.of(request, assistant_prefix="You are"))
    summaries = lm.generate(requests, max_new_tokens=48, temperature=0.0, seed=seed, stop=("\n",))
    texts_k = [_clean_summary("You are " + s.lstrip()) for s in summaries]
    own = _nearest_own_centroid(texts_k, embeddings, labels, check_encoder) if check_encoder is not None else None
    personas: list[Persona] = []
    for k, members in enumerate(members_of):
        comp, terms = compositions[k], terms_of[k]
        text, source, rejected = texts_k[k], "lm", ""
        if is_degenerate(text, [p.text for p in personas]):
            text, source = _fallback_text(terms, comp), "fallback"
        elif own is not None and not own[k]:
            text, source, rejected = _fallback_text(terms, comp), "fallback", text
        personas.append(Persona(text=text, size=int(len(members)), source=source, composition=comp, terms=terms,
                                rejected=rejected))
    return personas, labels


def _nearest_own_centroid(summaries: Sequence[str], embeddings: np.ndarray, labels: np.ndarray,
                          encoder: SentenceEncoder) -> np.ndarray:
    """Whether each cluster's summary embeds nearest (cosine) to that cluster's mean embedding."""
    k = len(summaries)
    centroids = np.stack([embeddings[labels == m].mean(axis=0) for m in range(k)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-12)
    emb = np.asarray(encoder.encode(list(summaries)), dtype=np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    return (emb @ centroids.T).argmax(axis=1) == np.arange(k)


def user_personas(texts: Sequence[str]) -> list[Persona]:
    """Personas given by the user, used verbatim."""
    cleaned = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
    if not cleaned:
        raise DataError("mop.personas is empty; give at least one persona description or omit the key")
    return [Persona(text=t, source="user") for t in cleaned]
