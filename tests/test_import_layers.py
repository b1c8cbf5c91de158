"""Imports point one way (CONTRIBUTING.md): entry scripts -> opts -> engine -> inference -> models, datasets
(peers: neither imports the other) -> util; inside models/ops: functions -> extension -> verification ->
dispatch -> modules. Every project module's imports, read with `ast` (also those inside functions), must
follow the layers and form no cycle."""
import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

from tests.conftest import ROOT

# Rank of each top-level package or module; an import must point to a lower rank, or stay in its own
# package (acyclic). Top-level scripts not named here are entry scripts (main.py, demo.py, eval_*.py, ...).
RANKS = {'util': 0, 'models': 1, 'datasets': 1, 'inference': 2, 'engine': 3, 'opts': 4, 'tools': 5, 'tests': 6}
ENTRY_RANK = 5
OPS_ORDER = ('functions', 'extension', 'verification', 'dispatch', 'modules')

Edge = Tuple[str, str]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def project_modules() -> Dict[str, Path]:
    files = [p for p in ROOT.rglob('*.py') if not any(part.startswith('.') for part in p.relative_to(ROOT).parts)]
    return {module_name(path): path for path in files}


def imported_modules(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The project modules that `name` (at `path`) imports, relative imports resolved."""
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([node.module] if node.module else []))
            candidates = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base
                          for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition('.')[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def rank(module: str) -> int:
    return RANKS.get(module.split('.')[0], ENTRY_RANK)


def violations(edges: List[Edge]) -> List[str]:
    """Arrows that point up or sideways between packages, against the models/ops order, or around a cycle."""
    problems = []
    for source, target in edges:
        source_top, target_top = source.split('.')[0], target.split('.')[0]
        if source_top != target_top and rank(source) <= rank(target):
            problems.append(f'{source} -> {target}: {target_top} is not below {source_top}')
        source_op, target_op = (m.split('.')[2] if m.startswith('models.ops.') else None for m in (source, target))
        if source_op in OPS_ORDER and target_op in OPS_ORDER and \
                OPS_ORDER.index(source_op) <= OPS_ORDER.index(target_op):
            problems.append(f'{source} -> {target}: against models/ops order {" -> ".join(OPS_ORDER)}')
    graph: Dict[str, List[str]] = {}
    for source, target in edges:
        graph.setdefault(source, []).append(target)
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for successor in sorted(graph.get(node, [])):
            if state.get(successor) == 1:
                cycle = path[path.index(successor):] + [successor]
                problems.append('cycle: ' + ' -> '.join(cycle))
            elif successor not in state:
                visit(successor, path + [successor])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return problems


def project_edges() -> List[Edge]:
    modules = project_modules()
    return sorted((name, target) for name, path in modules.items()
                  for target in imported_modules(name, path, modules))


def test_imports_point_one_way_without_cycles():
    edges = project_edges()
    assert ('engine', 'inference') in edges and ('models.ops.modules', 'models.ops.dispatch') in edges, \
        'the import graph was not read'
    assert violations(edges) == []


def test_the_check_catches_cycles_and_wrong_arrows():
    assert violations([('util.misc', 'models.bifit')]) == ['util.misc -> models.bifit: models is not below util']
    assert violations([('models.bifit', 'datasets.ytvos')]) == [
        'models.bifit -> datasets.ytvos: datasets is not below models']
    assert violations([('models.ops.functions', 'models.ops.dispatch')]) == [
        'models.ops.functions -> models.ops.dispatch: against models/ops order '
        'functions -> extension -> verification -> dispatch -> modules']
    assert violations([('models.a', 'models.b'), ('models.b', 'models.c'), ('models.c', 'models.a')]) == [
        'cycle: models.a -> models.b -> models.c -> models.a']
    assert violations([('main', 'engine'), ('engine', 'inference'), ('inference', 'models'),
                       ('models.bifit', 'util.misc')]) == []
