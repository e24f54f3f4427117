"""Model families by name. Importing the package imports every family module, whose
`@register_family` decorators fill the registry (timm's way): the registry itself imports none."""

from hiertune.models import cnn, cosine, dualhead, layover, twomodel  # noqa: F401
