-- A small stand-in for the campus view: `sqlite3 sample.db < sample.sql` makes the database
-- mapping.toml reads.
CREATE TABLE PS_PERSONAL (
  EMPLID TEXT PRIMARY KEY, FIRST_NAME TEXT, PREF_FIRST_NAME TEXT, LAST_NAME TEXT,
  EMAIL_ADDR TEXT, ADDRESS1 TEXT, ADDRESS2 TEXT, CITY TEXT, STATE TEXT, POSTAL TEXT,
  COUNTRY TEXT, BARCODE TEXT
);
CREATE TABLE PS_STDNT_CAR (
  EMPLID TEXT, ACAD_CAREER TEXT, CAMPUS TEXT, ENRL_STATUS TEXT, EXP_DATE DATE
);
CREATE VIEW PS_ALMA_PATRON_VW AS
  SELECT p.EMPLID, p.FIRST_NAME, p.PREF_FIRST_NAME, p.LAST_NAME, c.ACAD_CAREER, c.EXP_DATE,
         c.CAMPUS, c.ENRL_STATUS, p.EMAIL_ADDR, p.ADDRESS1, p.ADDRESS2, p.CITY, p.STATE,
         p.POSTAL, p.COUNTRY, p.BARCODE
    FROM PS_PERSONAL p JOIN PS_STDNT_CAR c ON c.EMPLID = p.EMPLID;
INSERT INTO PS_PERSONAL VALUES
  ('1000001', 'Ana', NULL, 'Ruiz', 'Ana.Ruiz@Example.EDU', '1 Quad Dr', NULL, 'Austin', 'TX',
   '78712', 'USA', '21000000001'),
  ('1000002', 'Robert', 'Bob', 'Chen', 'rchen@example.edu', '22 Speedway', 'Apt 4', 'Austin',
   'TX', '78705', 'USA', '21000000002'),
  ('1000003', 'Émilie', NULL, 'Tremblay', 'etremblay@example.edu', '9 Rue Laval', NULL,
   'Montréal', 'QC', 'H2X 1Y4', 'CAN', '21000000003');
INSERT INTO PS_STDNT_CAR VALUES
  ('1000001', 'UGRD', 'main', 'E', '2028-05-31'),
  ('1000002', 'LAW', 'main', 'E', '2027-12-31'),
  ('1000003', 'GRAD', 'north', 'E', '2029-08-31');
