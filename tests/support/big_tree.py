"""A generated category tree the size of Google's Product Taxonomy: 6,000 leaves, for tests and
benchmarks of the tree's grammar, prompt and SQL at catalogue scale.

    python tests/support/big_tree.py google /tmp/tree.txt   # 'id - A > B > C' lines (no attributes)
    python tests/support/big_tree.py yaml /tmp/tree.yaml    # the same tree, with attributes

Deterministic: 20 roots × 10 branches × 30 leaves, names built from Portuguese product words
(so the tokenizer sees text like a real tree's, not random letters), attributes on every root
and on every third branch (100 groups of leaves with the same attributes, as inherited schemas
make in a real tree).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

ROOTS = 20
BRANCHES = 10
LEAVES = 30

NOUNS = [
    "Acessórios",
    "Cabos",
    "Capas",
    "Suportes",
    "Carregadores",
    "Fones",
    "Teclados",
    "Mouses",
    "Monitores",
    "Cadeiras",
    "Mesas",
    "Estantes",
    "Luminárias",
    "Tapetes",
    "Cortinas",
    "Almofadas",
    "Panelas",
    "Frigideiras",
    "Talheres",
    "Copos",
    "Pratos",
    "Toalhas",
    "Lençóis",
    "Travesseiros",
    "Camisetas",
    "Camisas",
    "Calças",
    "Bermudas",
    "Vestidos",
    "Saias",
    "Jaquetas",
    "Casacos",
    "Meias",
    "Tênis",
    "Sandálias",
    "Botas",
    "Chinelos",
    "Mochilas",
    "Carteiras",
    "Cintos",
    "Relógios",
    "Brincos",
    "Colares",
    "Anéis",
    "Pulseiras",
    "Perfumes",
    "Cremes",
    "Xampus",
    "Escovas",
    "Bolas",
    "Raquetes",
    "Bicicletas",
    "Patins",
    "Bonecas",
    "Quebra-cabeças",
    "Carrinhos",
    "Blocos",
    "Livros",
    "Cadernos",
    "Canetas",
    "Lápis",
    "Furadeiras",
    "Chaves",
    "Alicates",
    "Martelos",
    "Vasos",
    "Regadores",
    "Mangueiras",
    "Pneus",
    "Tapetes-automotivos",
    "Coleiras",
    "Comedouros",
    "Cafés",
    "Chás",
    "Biscoitos",
    "Violões",
    "Teclados-musicais",
    "Baterias",
    "Microfones",
]
QUALIFIERS = [
    "de Couro",
    "de Algodão",
    "de Madeira",
    "de Metal",
    "de Vidro",
    "de Plástico",
    "de Silicone",
    "Infantis",
    "Femininos",
    "Masculinos",
    "Unissex",
    "Esportivos",
    "Profissionais",
    "Portáteis",
    "Sem Fio",
    "Elétricos",
    "Manuais",
    "Decorativos",
    "Térmicos",
    "Impermeáveis",
    "Dobráveis",
    "Ajustáveis",
    "Recarregáveis",
    "Compactos",
    "Grandes",
    "Pequenos",
    "para Viagem",
    "para Escritório",
    "para Cozinha",
    "para Jardim",
    "para Banheiro",
    "para Festas",
    "de Inverno",
    "de Verão",
    "Clássicos",
    "Modernos",
    "Vintage",
    "Premium",
    "Básicos",
    "Estampados",
]

ATTRIBUTE_VALUES = (
    [
        "couro",
        "plástico",
        "metal",
        "madeira",
        "vidro",
        "tecido",
        "borracha",
        "silicone",
        "papel",
        "cerâmica",
    ],
    ["pequeno", "médio", "grande"],
    ["liso", "estampado", "listrado", "xadrez"],
)


def _names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = f"{rng.choice(NOUNS)} {rng.choice(QUALIFIERS)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def tree(seed: int = 13) -> list[dict[str, Any]]:
    """The YAML/JSON form: roots with attributes, children, leaves."""
    rng = random.Random(seed)
    roots = []
    for r, root_name in enumerate(_names(rng, ROOTS)):
        branches = []
        for b, branch_name in enumerate(_names(rng, BRANCHES)):
            branch: dict[str, Any] = {"name": branch_name, "children": _names(rng, LEAVES)}
            if b % 3 == 0:
                branch["attributes"] = [
                    {
                        "name": f"acabamento_{b}",
                        "description": "acabamento visível da superfície",
                        "type": "enum",
                        "values": ATTRIBUTE_VALUES[2],
                    }
                ]
            branches.append(branch)
        roots.append(
            {
                "name": f"{root_name} {r + 1}",
                "attributes": [
                    {
                        "name": "material",
                        "description": "material predominante, como se vê na foto",
                        "type": "enum",
                        "values": sorted(rng.sample(ATTRIBUTE_VALUES[0], 6)),
                        "required": True,
                    },
                    {
                        "name": "tamanho",
                        "description": "porte do produto",
                        "type": "enum",
                        "values": ATTRIBUTE_VALUES[1],
                    },
                ],
                "children": branches,
            }
        )
    return roots


def google_lines(seed: int = 13) -> str:
    """The same tree in Google's text format (every node a line, parents first; no attributes)."""
    lines = ["# Google_Product_Taxonomy_Version: generated by tests/support/big_tree.py"]
    next_id = 1

    def emit(path: list[str], node: dict[str, Any] | str) -> None:
        nonlocal next_id
        name = node if isinstance(node, str) else node["name"]
        full = [*path, name]
        lines.append(f"{next_id} - {' > '.join(full)}")
        next_id += 1
        if isinstance(node, dict):
            for child in node.get("children", []):
                emit(full, child)

    for root in tree(seed):
        emit([], root)
    return "\n".join(lines) + "\n"


def write(kind: str, path: Path, seed: int = 13) -> Path:
    if kind == "google":
        path.write_text(google_lines(seed), encoding="utf-8")
    else:
        import yaml

        data = {"version": 1, "name": "big-tree", "categories": tree(seed)}
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    return path


if __name__ == "__main__":
    write(sys.argv[1], Path(sys.argv[2]))
