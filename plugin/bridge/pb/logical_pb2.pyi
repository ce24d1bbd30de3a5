from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Entity(_message.Message):
    __slots__ = ("ID", "name", "aliases", "metadata", "disabled", "namespace_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_ID_FIELD_NUMBER: _ClassVar[int]
    ID: str
    name: str
    aliases: _containers.RepeatedCompositeFieldContainer[Alias]
    metadata: _containers.ScalarMap[str, str]
    disabled: bool
    namespace_id: str
    def __init__(self, ID: _Optional[str] = ..., name: _Optional[str] = ..., aliases: _Optional[_Iterable[_Union[Alias, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., disabled: _Optional[bool] = ..., namespace_id: _Optional[str] = ...) -> None: ...

class Alias(_message.Message):
    __slots__ = ("mount_type", "mount_accessor", "name", "metadata", "ID", "namespace_id", "custom_metadata", "local")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CustomMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    MOUNT_ACCESSOR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_METADATA_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    mount_type: str
    mount_accessor: str
    name: str
    metadata: _containers.ScalarMap[str, str]
    ID: str
    namespace_id: str
    custom_metadata: _containers.ScalarMap[str, str]
    local: bool
    def __init__(self, mount_type: _Optional[str] = ..., mount_accessor: _Optional[str] = ..., name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ID: _Optional[str] = ..., namespace_id: _Optional[str] = ..., custom_metadata: _Optional[_Mapping[str, str]] = ..., local: _Optional[bool] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("ID", "name", "metadata", "namespace_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_ID_FIELD_NUMBER: _ClassVar[int]
    ID: str
    name: str
    metadata: _containers.ScalarMap[str, str]
    namespace_id: str
    def __init__(self, ID: _Optional[str] = ..., name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., namespace_id: _Optional[str] = ...) -> None: ...

class PluginEnvironment(_message.Message):
    __slots__ = ("vault_version", "vault_version_prerelease", "vault_version_metadata")
    VAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VAULT_VERSION_PRERELEASE_FIELD_NUMBER: _ClassVar[int]
    VAULT_VERSION_METADATA_FIELD_NUMBER: _ClassVar[int]
    vault_version: str
    vault_version_prerelease: str
    vault_version_metadata: str
    def __init__(self, vault_version: _Optional[str] = ..., vault_version_prerelease: _Optional[str] = ..., vault_version_metadata: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionReply(_message.Message):
    __slots__ = ("plugin_version",)
    PLUGIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    plugin_version: str
    def __init__(self, plugin_version: _Optional[str] = ...) -> None: ...
