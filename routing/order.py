"""A section's record order (`envelope.order_regex`), checked as its records go by.

The regex applied at the section's end to the string of its records' first digits kept a
character per record, and Python's engine then took memory with the string: 12 MB for the
420 000 records of a 256 MB section, on top of the string's list. Here the regex is an
automaton (Thompson's construction, made deterministic as it is walked): a section keeps one
state, and each record moves it by a table lookup. Only the syntax the layout's regexes use
is understood (characters, groups, `|`, `*`, `+`, `?`, anchors); any other fails the
layout's loading rather than being read wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_SPECIAL = frozenset("()|*+?^$.[]{}\\")


@dataclass(slots=True)
class _Nfa:
    moves: list[dict[str, int]] = field(default_factory=list)  # state -> character -> state
    free: list[list[int]] = field(default_factory=list)  # state -> states reached freely

    def state(self) -> int:
        self.moves.append({})
        self.free.append([])
        return len(self.moves) - 1


class _Parser:
    """Recursive descent over the regex, building the automaton's fragments (start, end)."""

    def __init__(self, pattern: str, nfa: _Nfa) -> None:
        self.text, self.at, self.nfa = pattern, 0, nfa

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def alternatives(self) -> tuple[int, int]:
        first = self.sequence()
        if self.peek() != "|":
            return first
        start, end = self.nfa.state(), self.nfa.state()
        for branch_start, branch_end in [first, *self._more_branches()]:
            self.nfa.free[start].append(branch_start)
            self.nfa.free[branch_end].append(end)
        return start, end

    def _more_branches(self) -> list[tuple[int, int]]:
        branches = []
        while self.peek() == "|":
            self.at += 1
            branches.append(self.sequence())
        return branches

    def sequence(self) -> tuple[int, int]:
        start = end = self.nfa.state()
        while self.peek() not in ("", "|", ")"):
            part_start, part_end = self.repeated()
            self.nfa.free[end].append(part_start)
            end = part_end
        return start, end

    def repeated(self) -> tuple[int, int]:
        inner = self.atom()
        while (quantifier := self.peek()) in ("*", "+", "?"):
            self.at += 1
            inner = self._quantified(inner, quantifier)
        return inner

    def _quantified(self, inner: tuple[int, int], quantifier: str) -> tuple[int, int]:
        start, end = self.nfa.state(), self.nfa.state()
        free = self.nfa.free
        free[start].append(inner[0])
        free[inner[1]].append(end)
        if quantifier in ("*", "?"):
            free[start].append(end)  # none
        if quantifier in ("*", "+"):
            free[inner[1]].append(inner[0])  # again
        return start, end

    def atom(self) -> tuple[int, int]:
        char = self.peek()
        self.at += 1
        if char == "(":
            inner = self.alternatives()
            if self.peek() != ")":
                raise self.error()
            self.at += 1
            return inner
        if not char or char in _SPECIAL:
            raise self.error()
        start, end = self.nfa.state(), self.nfa.state()
        self.nfa.moves[start][char] = end
        return start, end

    def error(self) -> ValueError:
        return ValueError(f"layout: order regex {self.text!r}: not understood at {self.at}")


class OrderAutomaton:
    """A regex over record letters, whole-string (`fullmatch`), as a deterministic automaton:
    a state is a number, DEAD (0) once no string can match; built whole when the layout is
    loaded (a handful of states), then only read, by any thread."""

    DEAD = 0

    def __init__(self, pattern: str) -> None:
        body = pattern.removeprefix("^").removesuffix("$")
        nfa = _Nfa()
        parser = _Parser(body, nfa)
        start, accept = parser.alternatives()
        if parser.at != len(body):
            raise parser.error()
        letters = sorted({letter for moves in nfa.moves for letter in moves})
        sets: list[frozenset[int]] = [frozenset()]  # DEAD
        ids = {sets[0]: self.DEAD}
        self.table: list[dict[str, int]] = [{}]
        todo = [_closure(nfa, {start})]
        ids[todo[0]] = self.start = 1
        sets.append(todo[0])
        self.table.append({})
        while todo:
            states = todo.pop()
            for letter in letters:
                moved = _closure(nfa, {m[letter] for m in map(nfa.moves.__getitem__, states)
                                       if letter in m})  # fmt: skip
                if moved not in ids:
                    ids[moved] = len(sets)
                    sets.append(moved)
                    self.table.append({})
                    todo.append(moved)
                self.table[ids[states]][letter] = ids[moved]
        self.accepting = frozenset(i for i, states in enumerate(sets) if accept in states)

    def step(self, state: int, letter: str) -> int:
        """The state after one more record."""
        return self.table[state].get(letter, self.DEAD)

    def fullmatch(self, letters: str) -> bool:
        state = self.start
        for letter in letters:
            state = self.step(state, letter)
        return state in self.accepting


def _closure(nfa: _Nfa, states: set[int]) -> frozenset[int]:
    """The states reached from these freely."""
    todo, seen = list(states), set(states)
    while todo:
        for other in nfa.free[todo.pop()]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return frozenset(seen)


class Runs:
    """The first runs of a section's record letters, for its ORDRE message (`2 3 4×3 5`):
    kept up to what the message can show, so bounded."""

    KEPT = 64  # more runs than a message of 60 characters shows (each takes two at least)

    def __init__(self) -> None:
        self.runs: list[list[str | int]] = []
        self.full = False

    def add(self, letter: str) -> None:
        if self.full:
            return
        if self.runs and self.runs[-1][0] == letter:
            self.runs[-1][1] = int(self.runs[-1][1]) + 1
        elif len(self.runs) < self.KEPT:
            self.runs.append([letter, 1])
        else:
            self.full = True

    def text(self, limit: int = 60) -> str:
        text = " ".join(f"{letter}×{n}" if n != 1 else str(letter) for letter, n in self.runs)
        return text if len(text) <= limit else text[: limit - 1] + "…"
