-- Run once by the postgres image on an empty volume: one database per service.
CREATE DATABASE flask_service OWNER items;
CREATE DATABASE fastapi_service OWNER items;
