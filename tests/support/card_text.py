"""Card text the tests share, so that no test file imports another: a pt-BR description long
enough for the default contract's character bounds (about 90 words) and three selling points for
the SQL side; a 179-word description and a whole card as a model writes it (a leaf of the shipped
tree) for the checks, the attempts policy and the engine."""

import json
from typing import Any

DESCRIPTION = (
    "Produto fotografado sobre fundo neutro, com acabamento cuidadoso e materiais de boa "
    "qualidade que garantem uso prolongado no dia a dia. O desenho equilibrado valoriza os "
    "detalhes visíveis na imagem e combina com ambientes e estilos variados, do mais clássico ao "
    "mais moderno. A construção firme transmite confiança, e a manutenção é simples: basta "
    "limpar com pano macio e guardar em local seco. Uma escolha prática para quem procura "
    "conforto, durabilidade e bom aspecto, seja para uso próprio ou para presentear alguém."
)
FEATURES = [
    "Materiais resistentes para o uso diário",
    "Acabamento cuidadoso em todos os detalhes",
    "Manutenção simples com pano macio",
]

MUG = "Casa e Cozinha > Potes e Garrafas > Garrafas Térmicas e Squeezes"


def card_values(
    name: str, *, path: str = MUG, colour: str = "azul", **fields: Any
) -> dict[str, Any]:
    """A valid card of the shipped pt-BR tree's leaf ``path`` as a dict; ``fields`` override."""
    from schemas.card import default_taxonomy
    from schemas.language import PT_BR

    leaf = default_taxonomy(PT_BR).leaf(path)
    assert leaf is not None
    values = {
        "product_name": name,
        "category_standard": leaf.top,
        "category_path": leaf.path_text,
        "category_id": leaf.id,
        "attributes": {},
        "description_long": DESCRIPTION,
        "color_primary": colour,
        "features_list": FEATURES,
    }
    values.update(fields)
    return values


LONG_DESCRIPTION = (
    "A cadeira de escritório ergonômica foi pensada para quem passa longas jornadas sentado e "
    "precisa de conforto sem abrir mão de uma postura correta. O encosto em tela de malha "
    "respirável acompanha a curvatura da coluna e tem apoio lombar ajustável, que alivia a "
    "tensão nas costas, no pescoço e nos ombros ao longo do dia. O assento de espuma de alta "
    "densidade mantém a forma com o uso e distribui o peso de maneira uniforme. Os braços são "
    "reguláveis em altura, e o pistão a gás de classe quatro permite ajustar a cadeira à mesa "
    "com um único movimento. A base de nylon reforçado com rodízios silenciosos desliza com "
    "facilidade sobre pisos de madeira, cerâmica ou carpete, sem riscar nem fazer barulho. O "
    "design moderno, de linhas retas e acabamento preto fosco, combina com o home office, com o "
    "estúdio e com escritórios corporativos. A limpeza é simples: basta um pano úmido. A "
    "montagem leva poucos minutos, com manual ilustrado e ferramentas incluídas na embalagem, e "
    "a garantia do fabricante cobre defeitos de fabricação por um ano inteiro."
)


GOOD_CARD = {
    "product_name": "Luminária de mesa articulada",
    # what the model writes: a leaf of the shipped tree, then that leaf's attributes
    "category": {
        "path": "Decoração > Iluminação > Luminárias de Mesa e de Chão",
        "attributes": {"material": None},
    },
    "description_long": LONG_DESCRIPTION,  # 179 words of Portuguese prose
    "color_primary": "branco",
    "features_list": ["Haste articulada", "Luz LED econômica", "Base com peso estável"],
}


def card_text(**overrides: object) -> str:
    return json.dumps({**GOOD_CARD, **overrides}, ensure_ascii=False)
