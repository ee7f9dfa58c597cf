"""Card text the SQL-side tests share: a pt-BR description long enough for the default
contract's character bounds (about 90 words) and three selling points."""

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
