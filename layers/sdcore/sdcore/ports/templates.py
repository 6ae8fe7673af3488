"""The template and batch stores: a user's (and the shared) templates, versioned, and the batches
that ran them. The AWS adapters keep both in the users table; the local ones in SQLite."""

from __future__ import annotations

from abc import ABC, abstractmethod

from sdcore.domain.templates import Batch, Template


class TemplateStore(ABC):
    @abstractmethod
    def put(self, template: Template, expected_version: int) -> None:
        """Store `template` if the stored one is at `expected_version` (0: there is none), in
        one conditional write.

        Raises
        ------
        StaleWriteError
            The stored template is at another version (or exists, for 0).
        """

    @abstractmethod
    def get(self, owner: str, name: str) -> Template:
        """Raises NotFoundError."""

    @abstractmethod
    def list(self, owner: str) -> list[Template]:
        """Every template of `owner`, by name."""

    @abstractmethod
    def delete(self, owner: str, name: str) -> None:
        """Raises NotFoundError."""


class BatchStore(ABC):
    @abstractmethod
    def create(self, batch: Batch) -> None:
        """Raises ConflictError if a batch of that id exists."""

    @abstractmethod
    def get(self, batch_id: str) -> Batch:
        """Raises NotFoundError."""

    @abstractmethod
    def set_grid(self, batch_id: str, key: str) -> Batch:
        """Record the batch's grid object (idempotent: a grid recorded first is kept).

        Raises NotFoundError."""
