import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import logical_pb2 as _logical_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Header(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, header: _Optional[_Iterable[str]] = ...) -> None: ...

class ProtoError(_message.Message):
    __slots__ = ("err_type", "err_msg", "err_code")
    ERR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERR_MSG_FIELD_NUMBER: _ClassVar[int]
    ERR_CODE_FIELD_NUMBER: _ClassVar[int]
    err_type: int
    err_msg: str
    err_code: int
    def __init__(self, err_type: _Optional[int] = ..., err_msg: _Optional[str] = ..., err_code: _Optional[int] = ...) -> None: ...

class Paths(_message.Message):
    __slots__ = ("root", "unauthenticated", "local_storage", "seal_wrap_storage", "write_forwarded_storage")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    UNAUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STORAGE_FIELD_NUMBER: _ClassVar[int]
    SEAL_WRAP_STORAGE_FIELD_NUMBER: _ClassVar[int]
    WRITE_FORWARDED_STORAGE_FIELD_NUMBER: _ClassVar[int]
    root: _containers.RepeatedScalarFieldContainer[str]
    unauthenticated: _containers.RepeatedScalarFieldContainer[str]
    local_storage: _containers.RepeatedScalarFieldContainer[str]
    seal_wrap_storage: _containers.RepeatedScalarFieldContainer[str]
    write_forwarded_storage: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, root: _Optional[_Iterable[str]] = ..., unauthenticated: _Optional[_Iterable[str]] = ..., local_storage: _Optional[_Iterable[str]] = ..., seal_wrap_storage: _Optional[_Iterable[str]] = ..., write_forwarded_storage: _Optional[_Iterable[str]] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("id", "ReplicationCluster", "operation", "path", "data", "secret", "auth", "headers", "client_token", "client_token_accessor", "display_name", "mount_point", "mount_type", "mount_accessor", "wrap_info", "client_token_remaining_uses", "entity_id", "policy_override", "unauthenticated", "connection")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Header
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Header, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLICATIONCLUSTER_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_ACCESSOR_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    MOUNT_POINT_FIELD_NUMBER: _ClassVar[int]
    MOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    MOUNT_ACCESSOR_FIELD_NUMBER: _ClassVar[int]
    WRAP_INFO_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_REMAINING_USES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    UNAUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    ReplicationCluster: str
    operation: str
    path: str
    data: str
    secret: Secret
    auth: Auth
    headers: _containers.MessageMap[str, Header]
    client_token: str
    client_token_accessor: str
    display_name: str
    mount_point: str
    mount_type: str
    mount_accessor: str
    wrap_info: RequestWrapInfo
    client_token_remaining_uses: int
    entity_id: str
    policy_override: bool
    unauthenticated: bool
    connection: Connection
    def __init__(self, id: _Optional[str] = ..., ReplicationCluster: _Optional[str] = ..., operation: _Optional[str] = ..., path: _Optional[str] = ..., data: _Optional[str] = ..., secret: _Optional[_Union[Secret, _Mapping]] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ..., headers: _Optional[_Mapping[str, Header]] = ..., client_token: _Optional[str] = ..., client_token_accessor: _Optional[str] = ..., display_name: _Optional[str] = ..., mount_point: _Optional[str] = ..., mount_type: _Optional[str] = ..., mount_accessor: _Optional[str] = ..., wrap_info: _Optional[_Union[RequestWrapInfo, _Mapping]] = ..., client_token_remaining_uses: _Optional[int] = ..., entity_id: _Optional[str] = ..., policy_override: _Optional[bool] = ..., unauthenticated: _Optional[bool] = ..., connection: _Optional[_Union[Connection, _Mapping]] = ...) -> None: ...

class Auth(_message.Message):
    __slots__ = ("lease_options", "internal_data", "display_name", "policies", "metadata", "client_token", "accessor", "period", "num_uses", "entity_id", "alias", "group_aliases", "bound_cidrs", "token_policies", "identity_policies", "explicit_max_ttl", "token_type", "no_default_policy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEASE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_DATA_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCESSOR_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    NUM_USES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ALIASES_FIELD_NUMBER: _ClassVar[int]
    BOUND_CIDRS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_POLICIES_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_POLICIES_FIELD_NUMBER: _ClassVar[int]
    EXPLICIT_MAX_TTL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    NO_DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    lease_options: LeaseOptions
    internal_data: str
    display_name: str
    policies: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    client_token: str
    accessor: str
    period: int
    num_uses: int
    entity_id: str
    alias: _logical_pb2.Alias
    group_aliases: _containers.RepeatedCompositeFieldContainer[_logical_pb2.Alias]
    bound_cidrs: _containers.RepeatedScalarFieldContainer[str]
    token_policies: _containers.RepeatedScalarFieldContainer[str]
    identity_policies: _containers.RepeatedScalarFieldContainer[str]
    explicit_max_ttl: int
    token_type: int
    no_default_policy: bool
    def __init__(self, lease_options: _Optional[_Union[LeaseOptions, _Mapping]] = ..., internal_data: _Optional[str] = ..., display_name: _Optional[str] = ..., policies: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., client_token: _Optional[str] = ..., accessor: _Optional[str] = ..., period: _Optional[int] = ..., num_uses: _Optional[int] = ..., entity_id: _Optional[str] = ..., alias: _Optional[_Union[_logical_pb2.Alias, _Mapping]] = ..., group_aliases: _Optional[_Iterable[_Union[_logical_pb2.Alias, _Mapping]]] = ..., bound_cidrs: _Optional[_Iterable[str]] = ..., token_policies: _Optional[_Iterable[str]] = ..., identity_policies: _Optional[_Iterable[str]] = ..., explicit_max_ttl: _Optional[int] = ..., token_type: _Optional[int] = ..., no_default_policy: _Optional[bool] = ...) -> None: ...

class LeaseOptions(_message.Message):
    __slots__ = ("TTL", "renewable", "increment", "issue_time", "MaxTTL")
    TTL_FIELD_NUMBER: _ClassVar[int]
    RENEWABLE_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAXTTL_FIELD_NUMBER: _ClassVar[int]
    TTL: int
    renewable: bool
    increment: int
    issue_time: _timestamp_pb2.Timestamp
    MaxTTL: int
    def __init__(self, TTL: _Optional[int] = ..., renewable: _Optional[bool] = ..., increment: _Optional[int] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., MaxTTL: _Optional[int] = ...) -> None: ...

class Secret(_message.Message):
    __slots__ = ("lease_options", "internal_data", "lease_id")
    LEASE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_DATA_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_options: LeaseOptions
    internal_data: str
    lease_id: str
    def __init__(self, lease_options: _Optional[_Union[LeaseOptions, _Mapping]] = ..., internal_data: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("secret", "auth", "data", "redirect", "warnings", "wrap_info", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Header
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Header, _Mapping]] = ...) -> None: ...
    SECRET_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    WRAP_INFO_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    secret: Secret
    auth: Auth
    data: str
    redirect: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    wrap_info: ResponseWrapInfo
    headers: _containers.MessageMap[str, Header]
    def __init__(self, secret: _Optional[_Union[Secret, _Mapping]] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ..., data: _Optional[str] = ..., redirect: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., wrap_info: _Optional[_Union[ResponseWrapInfo, _Mapping]] = ..., headers: _Optional[_Mapping[str, Header]] = ...) -> None: ...

class ResponseWrapInfo(_message.Message):
    __slots__ = ("TTL", "token", "accessor", "creation_time", "wrapped_accessor", "wrapped_entity_id", "format", "creation_path", "seal_wrap")
    TTL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCESSOR_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIME_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_ACCESSOR_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CREATION_PATH_FIELD_NUMBER: _ClassVar[int]
    SEAL_WRAP_FIELD_NUMBER: _ClassVar[int]
    TTL: int
    token: str
    accessor: str
    creation_time: _timestamp_pb2.Timestamp
    wrapped_accessor: str
    wrapped_entity_id: str
    format: str
    creation_path: str
    seal_wrap: bool
    def __init__(self, TTL: _Optional[int] = ..., token: _Optional[str] = ..., accessor: _Optional[str] = ..., creation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wrapped_accessor: _Optional[str] = ..., wrapped_entity_id: _Optional[str] = ..., format: _Optional[str] = ..., creation_path: _Optional[str] = ..., seal_wrap: _Optional[bool] = ...) -> None: ...

class RequestWrapInfo(_message.Message):
    __slots__ = ("TTL", "format", "seal_wrap")
    TTL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEAL_WRAP_FIELD_NUMBER: _ClassVar[int]
    TTL: int
    format: str
    seal_wrap: bool
    def __init__(self, TTL: _Optional[int] = ..., format: _Optional[str] = ..., seal_wrap: _Optional[bool] = ...) -> None: ...

class HandleRequestArgs(_message.Message):
    __slots__ = ("storage_id", "request")
    STORAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    storage_id: int
    request: Request
    def __init__(self, storage_id: _Optional[int] = ..., request: _Optional[_Union[Request, _Mapping]] = ...) -> None: ...

class HandleRequestReply(_message.Message):
    __slots__ = ("response", "err")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    response: Response
    err: ProtoError
    def __init__(self, response: _Optional[_Union[Response, _Mapping]] = ..., err: _Optional[_Union[ProtoError, _Mapping]] = ...) -> None: ...

class InitializeArgs(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InitializeReply(_message.Message):
    __slots__ = ("err",)
    ERR_FIELD_NUMBER: _ClassVar[int]
    err: ProtoError
    def __init__(self, err: _Optional[_Union[ProtoError, _Mapping]] = ...) -> None: ...

class SpecialPathsReply(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: Paths
    def __init__(self, paths: _Optional[_Union[Paths, _Mapping]] = ...) -> None: ...

class HandleExistenceCheckArgs(_message.Message):
    __slots__ = ("storage_id", "request")
    STORAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    storage_id: int
    request: Request
    def __init__(self, storage_id: _Optional[int] = ..., request: _Optional[_Union[Request, _Mapping]] = ...) -> None: ...

class HandleExistenceCheckReply(_message.Message):
    __slots__ = ("check_found", "exists", "err")
    CHECK_FOUND_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    check_found: bool
    exists: bool
    err: ProtoError
    def __init__(self, check_found: _Optional[bool] = ..., exists: _Optional[bool] = ..., err: _Optional[_Union[ProtoError, _Mapping]] = ...) -> None: ...

class SetupArgs(_message.Message):
    __slots__ = ("broker_id", "Config", "backendUUID")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    BACKENDUUID_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    Config: _containers.ScalarMap[str, str]
    backendUUID: str
    def __init__(self, broker_id: _Optional[int] = ..., Config: _Optional[_Mapping[str, str]] = ..., backendUUID: _Optional[str] = ...) -> None: ...

class SetupReply(_message.Message):
    __slots__ = ("err",)
    ERR_FIELD_NUMBER: _ClassVar[int]
    err: str
    def __init__(self, err: _Optional[str] = ...) -> None: ...

class TypeReply(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: int
    def __init__(self, type: _Optional[int] = ...) -> None: ...

class InvalidateKeyArgs(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class StorageEntry(_message.Message):
    __slots__ = ("key", "value", "seal_wrap")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEAL_WRAP_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    seal_wrap: bool
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., seal_wrap: _Optional[bool] = ...) -> None: ...

class StorageListArgs(_message.Message):
    __slots__ = ("prefix", "txn")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    txn: str
    def __init__(self, prefix: _Optional[str] = ..., txn: _Optional[str] = ...) -> None: ...

class StorageListPageArgs(_message.Message):
    __slots__ = ("prefix", "after", "limit", "txn")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    after: str
    limit: int
    txn: str
    def __init__(self, prefix: _Optional[str] = ..., after: _Optional[str] = ..., limit: _Optional[int] = ..., txn: _Optional[str] = ...) -> None: ...

class StorageListReply(_message.Message):
    __slots__ = ("keys", "err")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    err: str
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., err: _Optional[str] = ...) -> None: ...

class StorageGetArgs(_message.Message):
    __slots__ = ("key", "txn")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    key: str
    txn: str
    def __init__(self, key: _Optional[str] = ..., txn: _Optional[str] = ...) -> None: ...

class StorageGetReply(_message.Message):
    __slots__ = ("entry", "err")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    entry: StorageEntry
    err: str
    def __init__(self, entry: _Optional[_Union[StorageEntry, _Mapping]] = ..., err: _Optional[str] = ...) -> None: ...

class StoragePutArgs(_message.Message):
    __slots__ = ("entry", "txn")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    entry: StorageEntry
    txn: str
    def __init__(self, entry: _Optional[_Union[StorageEntry, _Mapping]] = ..., txn: _Optional[str] = ...) -> None: ...

class StoragePutReply(_message.Message):
    __slots__ = ("err",)
    ERR_FIELD_NUMBER: _ClassVar[int]
    err: str
    def __init__(self, err: _Optional[str] = ...) -> None: ...

class StorageDeleteArgs(_message.Message):
    __slots__ = ("key", "txn")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    key: str
    txn: str
    def __init__(self, key: _Optional[str] = ..., txn: _Optional[str] = ...) -> None: ...

class StorageDeleteReply(_message.Message):
    __slots__ = ("err",)
    ERR_FIELD_NUMBER: _ClassVar[int]
    err: str
    def __init__(self, err: _Optional[str] = ...) -> None: ...

class TTLReply(_message.Message):
    __slots__ = ("TTL",)
    TTL_FIELD_NUMBER: _ClassVar[int]
    TTL: int
    def __init__(self, TTL: _Optional[int] = ...) -> None: ...

class TaintedReply(_message.Message):
    __slots__ = ("tainted",)
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    tainted: bool
    def __init__(self, tainted: _Optional[bool] = ...) -> None: ...

class LocalMountReply(_message.Message):
    __slots__ = ("local",)
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    local: bool
    def __init__(self, local: _Optional[bool] = ...) -> None: ...

class EntityInfoArgs(_message.Message):
    __slots__ = ("entity_id",)
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    def __init__(self, entity_id: _Optional[str] = ...) -> None: ...

class EntityInfoReply(_message.Message):
    __slots__ = ("entity", "err")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    entity: _logical_pb2.Entity
    err: str
    def __init__(self, entity: _Optional[_Union[_logical_pb2.Entity, _Mapping]] = ..., err: _Optional[str] = ...) -> None: ...

class GroupsForEntityReply(_message.Message):
    __slots__ = ("groups", "err")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[_logical_pb2.Group]
    err: str
    def __init__(self, groups: _Optional[_Iterable[_Union[_logical_pb2.Group, _Mapping]]] = ..., err: _Optional[str] = ...) -> None: ...

class PluginEnvReply(_message.Message):
    __slots__ = ("plugin_environment", "err")
    PLUGIN_ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    plugin_environment: _logical_pb2.PluginEnvironment
    err: str
    def __init__(self, plugin_environment: _Optional[_Union[_logical_pb2.PluginEnvironment, _Mapping]] = ..., err: _Optional[str] = ...) -> None: ...

class GeneratePasswordFromPolicyRequest(_message.Message):
    __slots__ = ("policy_name",)
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    policy_name: str
    def __init__(self, policy_name: _Optional[str] = ...) -> None: ...

class GeneratePasswordFromPolicyReply(_message.Message):
    __slots__ = ("password",)
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    password: str
    def __init__(self, password: _Optional[str] = ...) -> None: ...

class ClusterInfoReply(_message.Message):
    __slots__ = ("cluster_name", "cluster_id", "err")
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    cluster_name: str
    cluster_id: str
    err: str
    def __init__(self, cluster_name: _Optional[str] = ..., cluster_id: _Optional[str] = ..., err: _Optional[str] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("remote_addr", "connection_state", "remote_port", "proxied_certificates_raw", "peer_certificates_raw")
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_STATE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    PROXIED_CERTIFICATES_RAW_FIELD_NUMBER: _ClassVar[int]
    PEER_CERTIFICATES_RAW_FIELD_NUMBER: _ClassVar[int]
    remote_addr: str
    connection_state: ConnectionState
    remote_port: int
    proxied_certificates_raw: _containers.RepeatedScalarFieldContainer[bytes]
    peer_certificates_raw: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, remote_addr: _Optional[str] = ..., connection_state: _Optional[_Union[ConnectionState, _Mapping]] = ..., remote_port: _Optional[int] = ..., proxied_certificates_raw: _Optional[_Iterable[bytes]] = ..., peer_certificates_raw: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ConnectionState(_message.Message):
    __slots__ = ("version", "handshake_complete", "did_resume", "cipher_suite", "negotiated_protocol", "negotiated_protocol_is_mutual", "server_name", "peer_certificates", "verified_chains", "signed_certificate_timestamps", "ocsp_response", "tls_unique")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    DID_RESUME_FIELD_NUMBER: _ClassVar[int]
    CIPHER_SUITE_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATED_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATED_PROTOCOL_IS_MUTUAL_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    PEER_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_CHAINS_FIELD_NUMBER: _ClassVar[int]
    SIGNED_CERTIFICATE_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    OCSP_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TLS_UNIQUE_FIELD_NUMBER: _ClassVar[int]
    version: int
    handshake_complete: bool
    did_resume: bool
    cipher_suite: int
    negotiated_protocol: str
    negotiated_protocol_is_mutual: bool
    server_name: str
    peer_certificates: CertificateChain
    verified_chains: _containers.RepeatedCompositeFieldContainer[CertificateChain]
    signed_certificate_timestamps: _containers.RepeatedScalarFieldContainer[bytes]
    ocsp_response: bytes
    tls_unique: bytes
    def __init__(self, version: _Optional[int] = ..., handshake_complete: _Optional[bool] = ..., did_resume: _Optional[bool] = ..., cipher_suite: _Optional[int] = ..., negotiated_protocol: _Optional[str] = ..., negotiated_protocol_is_mutual: _Optional[bool] = ..., server_name: _Optional[str] = ..., peer_certificates: _Optional[_Union[CertificateChain, _Mapping]] = ..., verified_chains: _Optional[_Iterable[_Union[CertificateChain, _Mapping]]] = ..., signed_certificate_timestamps: _Optional[_Iterable[bytes]] = ..., ocsp_response: _Optional[bytes] = ..., tls_unique: _Optional[bytes] = ...) -> None: ...

class Certificate(_message.Message):
    __slots__ = ("asn1_data",)
    ASN1_DATA_FIELD_NUMBER: _ClassVar[int]
    asn1_data: bytes
    def __init__(self, asn1_data: _Optional[bytes] = ...) -> None: ...

class CertificateChain(_message.Message):
    __slots__ = ("certificates",)
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    certificates: _containers.RepeatedCompositeFieldContainer[Certificate]
    def __init__(self, certificates: _Optional[_Iterable[_Union[Certificate, _Mapping]]] = ...) -> None: ...
