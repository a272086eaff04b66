"""Search algorithms as ask/tell objects over a space's genotypes.

``ask()`` returns the next genotype to evaluate (or None while it must wait for results);
``tell(genotype, fitness, status)`` reports one result (fitness None when not trained). Each object
carries its own ``random.Random`` and pickles completely, which is what makes runs resumable and
reproducible.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

WORST = -1.0  # fitness given to failed individuals where an algorithm needs a number


@dataclass
class Member:
    genotype: object
    fitness: float
    eval_id: int | None = None


def warm_start(space, seeds, mutants: int, rng: random.Random) -> list:
    """The seed genotypes, then ``mutants`` small edits of each (a space without small edits uses
    its ordinary mutation)."""
    from ..spaces import small_edit

    seeds = list(seeds)
    out = list(seeds)
    for g in seeds:
        for _ in range(mutants):
            out.append(small_edit(g, space, rng) if hasattr(space, "fits") else space.mutate(g, rng))
    return out


class RegularizedEvolution:
    """Aging evolution (Real et al. 2019) as in the NeuroLoss search: the population is seeded from
    the best ``population`` of ``initial`` random candidates; each child mutates the best of
    ``sample`` members drawn with replacement and replaces the oldest member. Defaults are the
    paper's (100, 20, 1000 random, 4000 children)."""

    name = "regularized"

    def __init__(self, space, seed: int = 0, population: int = 100, sample: int = 20,
                 initial: int = 1000, children: int = 4000, warm=(), warm_mutants: int = 0):
        if population < 1 or sample < 1 or initial < population:
            raise ValueError("need population >= 1, sample >= 1 and initial >= population")
        self.space = space
        self.rng = random.Random(seed)
        # Warm start: the seed losses, then small edits of each, come before random candidates.
        self.warm = deque(warm_start(space, warm, warm_mutants, self.rng))
        self.population_size = population
        self.sample = sample
        self.initial = initial
        self.children = children
        self.seeds: list[Member] = []  # ok results of the random initial phase
        self.population: deque[Member] = deque()
        self.children_done = 0
        self.initial_asked = 0

    @property
    def seeding(self) -> bool:
        return not self.population

    def ask(self):
        if self.seeding:
            self.initial_asked += 1
            if getattr(self, "warm", None):
                return self.warm.popleft()
            return self.space.random_genotype(self.rng)
        drawn = [self.rng.choice(self.population) for _ in range(self.sample)]
        parent = max(drawn, key=lambda m: m.fitness)
        return self.space.mutate(parent.genotype, self.rng)

    def tell(self, genotype, fitness: float | None, status: str, eval_id: int | None = None):
        ok = fitness is not None and status == "ok"
        if self.seeding:
            if ok:
                self.seeds.append(Member(genotype, fitness, eval_id))
            if len(self.seeds) >= self.initial:
                best = sorted(self.seeds, key=lambda m: -m.fitness)[: self.population_size]
                self.population = deque(best)
            return
        if ok:
            self.population.append(Member(genotype, fitness, eval_id))
            self.population.popleft()
            self.children_done += 1

    def done(self) -> bool:
        return self.children_done >= self.children

    def members(self) -> list[Member]:
        return list(self.population) if self.population else list(self.seeds)


class GeneticProgramming:
    """Generational tree GP as in EvoMAL/NGL: tournament selection, subtree crossover, subtree and
    point mutation, elitism, depth/size limits (the space's). Defaults are EvoMAL's: population 25,
    50 generations, crossover 0.7, mutation 0.25, elitism 0.05, tournament 4."""

    name = "gp"

    def __init__(self, space, seed: int = 0, population: int = 25, generations: int = 50,
                 crossover: float = 0.7, mutation: float = 0.25, elitism: float = 0.05,
                 tournament: int = 4, warm=(), warm_mutants: int = 0):
        if not hasattr(space, "crossover"):
            raise ValueError(f"genetic programming needs a tree space, not {space.name!r}")
        self.space = space
        self.rng = random.Random(seed)
        self.population_size = population
        self.generations = generations
        self.p_crossover = crossover
        self.p_mutation = mutation
        self.n_elite = max(1, round(elitism * population)) if elitism > 0 else 0
        self.tournament = tournament
        self.generation = 0
        self.parents: list[Member] = []
        self.queue: deque = deque()  # offspring of the current generation not yet asked
        self.waiting = 0  # asked, not yet told
        self.offspring: list[Member] = []
        self._asked: list = []
        self._told: list[Member] = []
        first = warm_start(space, warm, warm_mutants, self.rng)[:population]
        self.queue.extend(first)
        self.queue.extend(space.random_genotype(self.rng) for _ in range(population - len(first)))

    def ask(self):
        if not self.queue:
            return None
        self.waiting += 1
        genotype = self.queue.popleft()
        self._asked.append(genotype)
        return genotype

    def tell(self, genotype, fitness: float | None, status: str, eval_id: int | None = None):
        self.waiting -= 1
        self._told.append(Member(genotype, WORST if fitness is None else fitness, eval_id))
        if not self.queue and self.waiting == 0:
            # Order offspring as they were asked, not as they finished, so parallel workers give
            # the same generations as one worker.
            order = {}
            for i, g in enumerate(self._asked):
                order.setdefault(id(g), []).append(i)
            self.offspring = sorted(self._told, key=lambda m: order[id(m.genotype)].pop(0))
            self._asked, self._told = [], []
            self._next_generation()

    def _select(self, pool: list[Member]) -> Member:
        return max((self.rng.choice(pool) for _ in range(self.tournament)), key=lambda m: m.fitness)

    def _next_generation(self):
        if self.generation == 0:
            self.parents = self.offspring
        else:  # elites of the old generation survive beside the new offspring
            elite = sorted(self.parents, key=lambda m: -m.fitness)[: self.n_elite]
            self.parents = elite + self.offspring
        self.offspring = []
        self.generation += 1
        if self.generation > self.generations:
            return
        for _ in range(self.population_size - self.n_elite):
            a = self._select(self.parents).genotype
            r = self.rng.random()
            if r < self.p_crossover:
                child = self.space.crossover(a, self._select(self.parents).genotype, self.rng)
                if self.rng.random() < self.p_mutation:
                    child = self.space.mutate(child, self.rng)
            elif r < self.p_crossover + self.p_mutation:
                child = self.space.mutate(a, self.rng)
            else:
                child = a  # reproduction; the duplicate check reuses its known fitness
            self.queue.append(child)

    def done(self) -> bool:
        return self.generation > self.generations

    def members(self) -> list[Member]:
        return list(self.parents) or list(self.offspring)


ALGORITHMS = {"regularized": RegularizedEvolution, "gp": GeneticProgramming}
